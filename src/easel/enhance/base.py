"""What an enhancer returns, and how an LLM's answer becomes one."""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass

CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")


@dataclass(frozen=True)
class Enhancement:
    prompt: str  # the enhanced positive prompt, before the model's prompt template
    negative_prompt: str  # suggested; used when the order gave none
    translated: bool = False  # a Chinese prompt was put into English for an English-only family


@dataclass(frozen=True)
class Ask:
    """One enhancement asked of an LLM."""

    system: str  # the family's system prompt (catalog [enhance.system_prompts])
    prompt: str
    family: str
    english_only: bool
    seed: int
    deadline: float | None = None  # time.monotonic() by which an answer is no longer waited for


class Enhancer(ABC):
    name: str
    model: str  # what it runs ("" for the template)

    @abstractmethod
    async def enhance(self, ask: Ask) -> Enhancement:
        """Raises on any failure; the caller falls back to the original prompt."""

    async def aclose(self) -> None:
        return None


def user_message(ask: Ask) -> str:
    note = ""
    if ask.english_only and CJK.search(ask.prompt):
        note = "The prompt is in Chinese; answer in English. "
    return f"{note}Prompt: {ask.prompt}"


def parse_answer(text: str, ask: Ask) -> Enhancement:
    """An LLM's answer: the JSON the system prompt asks for, else its text as the prompt."""
    text = text.strip()
    found = re.search(r"\{.*\}", text, re.DOTALL)
    prompt, negative = text, ""
    if found:
        try:
            data = json.loads(found.group(0))
        except ValueError:
            data = None
        if isinstance(data, dict) and isinstance(data.get("prompt"), str):
            prompt = data["prompt"].strip()
            value = data.get("negative_prompt")
            negative = value.strip() if isinstance(value, str) else ""
    if not prompt:
        raise ValueError("the enhancer answered with an empty prompt")
    translated = bool(ask.english_only and CJK.search(ask.prompt) and not CJK.search(prompt))
    return Enhancement(prompt=prompt, negative_prompt=negative, translated=translated)
