"""The default enhancer: the prompt as it is (the worker applies the model's catalog template)
and the model's own negative prompt. Deterministic, offline, nothing to download."""

from __future__ import annotations

from easel.enhance.base import Ask, Enhancement, Enhancer


class TemplateEnhancer(Enhancer):
    name = "template"
    model = ""

    def __init__(self, negative_prompts: dict[str, str]) -> None:
        self.negative_prompts = negative_prompts  # family -> a negative prompt to suggest

    async def enhance(self, ask: Ask) -> Enhancement:
        return Enhancement(ask.prompt, self.negative_prompts.get(ask.family, ""))
