"""The optional prompt classifier (EASEL_PROMPT_CLASSIFIER): a Hugging Face text-classification
model (repo id or folder, loaded with transformers, offline when HF_HUB_OFFLINE=1) run on CPU in
an API process, after the word list and before anything is charged. Loaded once per process on
the first prompt, in a thread (that prompt waits for it); each check runs in a thread, at most
`at_once` at a time, within `timeout` seconds (waiting for a turn included). A long prompt is
scored in overlapping windows of the model's length; its score is the highest."""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from typing import Any

from easel.config import Settings
from easel.errors import ContentPolicy, SafetyUnavailable
from easel.safety.prompts import normalized

log = logging.getLogger(__name__)

MAX_WINDOW = 512  # tokens per window at most (the model's own limit when lower)


class ClassifierError(RuntimeError):
    """The classifier could not run (load or inference failed)."""


@dataclass(frozen=True)
class PromptClassifierConfig:
    source: str  # repo id or folder
    labels: tuple[str, ...]  # the model's labels that count as refused
    threshold: float
    timeout: float
    at_once: int
    fail_open: bool


def prompt_classifier_config(settings: Settings) -> PromptClassifierConfig:
    return PromptClassifierConfig(
        source=settings.prompt_classifier,
        labels=tuple(settings.prompt_classifier_labels),
        threshold=settings.prompt_classifier_threshold,
        timeout=settings.prompt_classifier_timeout,
        at_once=settings.prompt_classifier_at_once,
        fail_open=settings.prompt_classifier_on_error == "open",
    )


class PromptClassifier:
    def __init__(self, config: PromptClassifierConfig) -> None:
        self.config = config
        self._loaded: tuple[Any, Any, list[int]] | None = None
        self._wrong: ClassifierError | None = None  # labels the model lacks: never loaded again
        self._load_lock = threading.Lock()
        self._gate = asyncio.Semaphore(max(1, config.at_once))
        self._loading = asyncio.Lock()
        self.runs = 0  # prompts scored by the model

    def _load(self) -> tuple[Any, Any, list[int]]:
        with self._load_lock:
            if self._wrong is not None:
                raise self._wrong
            if self._loaded is None:
                from transformers import AutoModelForSequenceClassification, AutoTokenizer

                tokenizer = AutoTokenizer.from_pretrained(self.config.source)
                model: Any = AutoModelForSequenceClassification.from_pretrained(self.config.source)
                names = {str(v): int(k) for k, v in model.config.id2label.items()}
                missing = [label for label in self.config.labels if label not in names]
                if missing:
                    self._wrong = ClassifierError(
                        f"EASEL_PROMPT_CLASSIFIER_LABELS names {missing}, which the model "
                        f"{self.config.source} does not have (its labels: {sorted(names)})"
                    )
                    raise self._wrong
                self._loaded = (tokenizer, model.eval(), [names[x] for x in self.config.labels])
            return self._loaded

    def load(self) -> None:
        """Load the model now (blocking)."""
        self._load()

    def score(self, text: str) -> float:
        """The highest probability of a refused label over the prompt's windows (blocking)."""
        import torch

        tokenizer, model, refused = self._load()
        limit = min(int(getattr(tokenizer, "model_max_length", MAX_WINDOW)), MAX_WINDOW)
        windows = tokenizer(
            normalized(text) or " ",
            truncation=True,
            max_length=limit,
            stride=limit // 2,
            return_overflowing_tokens=True,
        )["input_ids"]
        multi = model.config.problem_type == "multi_label_classification"
        best = 0.0
        for window in windows:
            with torch.inference_mode():
                logits = model(input_ids=torch.tensor([window])).logits[0].float()
            probs = logits.sigmoid() if multi else logits.softmax(-1)
            best = max(best, max(float(probs[i]) for i in refused))
        self.runs += 1
        return best

    async def check(self, text: str, param: str = "prompt") -> None:
        """Raise ContentPolicy when the prompt scores at least the threshold; when the check
        fails or runs out of time: SafetyUnavailable (503), or a logged pass (fail_open)."""
        try:
            if self._loaded is None:  # the first prompts wait for the load (outside the limit)
                async with self._loading:
                    await asyncio.to_thread(self._load)
            score = await asyncio.wait_for(self._gated(text), self.config.timeout)
        except Exception as exc:
            reason = (
                f"it took longer than {self.config.timeout:g} s"
                if isinstance(exc, TimeoutError)
                else f"it failed ({type(exc).__name__})"
            )
            log.warning(
                "prompt classifier unavailable",
                exc_info=not isinstance(exc, TimeoutError),
                extra={"action": "prompt_check_error", "reason": reason},
            )
            if self.config.fail_open:
                return
            raise SafetyUnavailable(
                f"the prompt could not be checked against this server's content policy "
                f"({reason}); nothing was charged. Try again in a moment"
            ) from exc
        if score >= self.config.threshold:
            raise ContentPolicy(
                f"the {param} is refused by this server's content policy (its classifier "
                "scored it as not allowed); change the wording. Nothing was charged",
                param=param,
            )

    async def _gated(self, text: str) -> float:
        """At most `at_once` threads score at a time; a thread that outlives the time limit
        keeps its turn until it ends, so abandoned checks cannot pile up."""
        await self._gate.acquire()
        try:
            work = asyncio.ensure_future(asyncio.to_thread(self.score, text))
        except BaseException:
            self._gate.release()
            raise
        work.add_done_callback(self._ended)
        return await asyncio.shield(work)

    def _ended(self, work: asyncio.Future[float]) -> None:
        self._gate.release()
        if not work.cancelled():
            work.exception()  # retrieved: an abandoned check's error was logged by its caller
