"""A small local instruct model (a Hugging Face repo id or folder, EASEL_ENHANCER_MODEL) run
with transformers on the worker's device, loaded on first use; sampling seeded per order. It runs
on its own one-thread executor, and a generation stops at the ask's deadline (`max_time`), so a
skipped enhancement does not keep computing."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from easel.enhance.base import Ask, Enhancement, Enhancer, parse_answer, user_message


class TransformersEnhancer(Enhancer):
    name = "transformers"

    def __init__(self, model: str, device: str, max_tokens: int) -> None:
        self.model = model
        self.device = device if device not in ("none", "auto") else "cpu"
        self.max_tokens = max_tokens
        self._loaded: tuple[Any, Any] | None = None
        self._lock = threading.Lock()  # one generation at a time; loads once
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="easel-enhance")
        self.generations = 0  # model runs (the cache saves the others)

    def _load(self) -> tuple[Any, Any]:
        if self._loaded is None:
            from transformers import AutoModelForCausalLM, AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(self.model)
            model: Any = AutoModelForCausalLM.from_pretrained(self.model)
            self._loaded = (tokenizer, model.to(self.device).eval())
        return self._loaded

    def _run(self, ask: Ask) -> str:
        import torch

        with self._lock:
            tokenizer, model = self._load()
            messages = [
                {"role": "system", "content": ask.system},
                {"role": "user", "content": user_message(ask)},
            ]
            text = tokenizer.apply_chat_template(
                messages, tokenize=False, add_generation_prompt=True
            )
            inputs = tokenizer(text, return_tensors="pt").to(self.device)
            limit = {}
            if ask.deadline is not None:
                left = ask.deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("no time left for this enhancement")
                limit["max_time"] = left
            generator_seed = ask.seed % 2**63
            torch.manual_seed(generator_seed)
            with torch.inference_mode():
                out = model.generate(
                    **inputs,
                    max_new_tokens=self.max_tokens,
                    min_new_tokens=1,
                    do_sample=True,
                    top_p=0.9,
                    temperature=0.7,
                    pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id,
                    **limit,
                )
            self.generations += 1
            if ask.deadline is not None and time.monotonic() >= ask.deadline:
                raise TimeoutError("stopped at the deadline")  # a cut-off answer is not used
            answer = out[0][inputs["input_ids"].shape[1] :]
            return str(tokenizer.decode(answer, skip_special_tokens=True))

    async def enhance(self, ask: Ask) -> Enhancement:
        loop = asyncio.get_running_loop()
        return parse_answer(await loop.run_in_executor(self._executor, self._run, ask), ask)

    async def aclose(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
