"""An OpenAI-compatible chat endpoint (Ollama, vLLM, llama.cpp's server, a hosted API):
POST {EASEL_ENHANCER_BASE_URL}/chat/completions, seeded, temperature 0."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx

from easel.config import Settings
from easel.enhance.base import Ask, Enhancement, Enhancer, parse_answer, user_message


class OpenAIChatEnhancer(Enhancer):
    name = "openai"

    def __init__(self, settings: Settings) -> None:
        self.model = settings.enhancer_model
        self.url = settings.enhancer_base_url.rstrip("/") + "/chat/completions"
        self.max_tokens = settings.enhancer_max_tokens
        self.max_bytes = settings.enhancer_max_response_bytes
        key = os.environ.get(settings.enhancer_api_key_env, "")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        # The operator's own endpoint (often on loopback): not a client-given URL, so the
        # outbound address policy for webhooks does not apply.
        self.client = httpx.AsyncClient(headers=headers, timeout=settings.enhance_timeout_seconds)

    async def enhance(self, ask: Ask) -> Enhancement:
        body: dict[str, Any] = {
            "model": self.model,
            "messages": [
                {"role": "system", "content": ask.system},
                {"role": "user", "content": user_message(ask)},
            ],
            "temperature": 0,
            "seed": ask.seed,
            "max_tokens": self.max_tokens,
        }
        data = bytearray()
        async with self.client.stream("POST", self.url, json=body) as response:
            response.raise_for_status()
            async for chunk in response.aiter_bytes():
                data += chunk
                if len(data) > self.max_bytes:
                    raise ValueError(
                        f"the chat endpoint answered more than {self.max_bytes} bytes "
                        "(EASEL_ENHANCER_MAX_RESPONSE_BYTES)"
                    )
        answer = json.loads(data)["choices"][0]["message"]["content"]
        if not isinstance(answer, str):
            raise ValueError("the chat endpoint answered without text")
        return parse_answer(answer, ask)

    async def aclose(self) -> None:
        await self.client.aclose()
