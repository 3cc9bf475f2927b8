"""The worker's enhancer: chosen by EASEL_ENHANCER, cached by a hash of (enhancer, model,
prompt, family, seed), limited to EASEL_ENHANCE_TIMEOUT_SECONDS; any failure keeps the prompt."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, replace

from easel.catalog import Catalog
from easel.config import Settings
from easel.enhance.base import Ask, Enhancement, Enhancer
from easel.enhance.template import TemplateEnhancer

log = logging.getLogger(__name__)

DONE, SKIPPED = "done", "skipped"


@dataclass(frozen=True)
class Outcome:
    status: str  # done | skipped
    enhancement: Enhancement | None  # None when skipped
    note: str = ""  # why it was skipped


def make_enhancer(settings: Settings, catalog: Catalog, device: str) -> Enhancer | None:
    """None for EASEL_ENHANCER=off."""
    if settings.enhancer == "off":
        return None
    if settings.enhancer == "openai":
        from easel.enhance.openai_chat import OpenAIChatEnhancer

        return OpenAIChatEnhancer(settings)
    if settings.enhancer == "transformers":
        from easel.enhance.local import TransformersEnhancer

        return TransformersEnhancer(settings.enhancer_model, device, settings.enhancer_max_tokens)
    negatives: dict[str, str] = {}
    for model in catalog.models.values():
        negatives.setdefault(model.family, model.negative_prompt)
    return TemplateEnhancer(negatives)


class Enhancing:
    def __init__(self, enhancer: Enhancer | None, catalog: Catalog, settings: Settings) -> None:
        self.enhancer = enhancer
        self.catalog = catalog
        self.timeout = settings.enhance_timeout_seconds
        self.max_chars = settings.max_prompt_chars
        self.entries = max(0, settings.enhance_cache_entries)
        self.cache: OrderedDict[str, Enhancement] = OrderedDict()

    def key(self, prompt: str, family: str, seed: int) -> str:
        assert self.enhancer is not None
        parts = (self.enhancer.name, self.enhancer.model, prompt, family, str(seed))
        return hashlib.sha256("\x00".join(parts).encode()).hexdigest()

    def deadline(self) -> float:
        """One batch's deadline (time.monotonic()): every enhancement of it ends by then."""
        return time.monotonic() + self.timeout

    async def enhance(
        self, prompt: str, family: str, seed: int, deadline: float | None = None
    ) -> Outcome:
        """`deadline`: shared by a batch's orders (default: the timeout from now)."""
        if self.enhancer is None:
            return Outcome(SKIPPED, None, "prompt enhancement is off on this server")
        key = self.key(prompt, family, seed)
        cached = self.cache.get(key)
        if cached is not None:
            self.cache.move_to_end(key)
            return Outcome(DONE, cached)
        settings = self.catalog.enhance
        ask = Ask(
            system=settings.system_prompt(family),
            prompt=prompt,
            family=family,
            english_only=family in settings.english_only,
            seed=seed,
            deadline=deadline or self.deadline(),
        )
        assert ask.deadline is not None
        try:
            async with asyncio.timeout(max(0.0, ask.deadline - time.monotonic())):
                result = await self.enhancer.enhance(ask)
        except TimeoutError:
            return Outcome(SKIPPED, None, f"the enhancer took longer than {self.timeout:g} s")
        except Exception as exc:
            log.warning(
                "prompt enhancement failed", extra={"action": "enhance_error"}, exc_info=True
            )
            return Outcome(SKIPPED, None, f"the enhancer failed ({type(exc).__name__})")
        result = replace(
            result,
            prompt=result.prompt[: self.max_chars],
            negative_prompt=result.negative_prompt[: self.max_chars],
        )
        if self.entries:
            self.cache[key] = result
            while len(self.cache) > self.entries:
                self.cache.popitem(last=False)
        return Outcome(DONE, result)

    async def aclose(self) -> None:
        if self.enhancer is not None:
            await self.enhancer.aclose()
