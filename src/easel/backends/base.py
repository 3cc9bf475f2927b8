"""The interface between the worker and a model family.

A backend is one loaded model. `generate` is a coroutine: a local diffusers backend runs its
pipeline in a thread, one job at a time (`LocalBackend`); a backend that waits on a remote API
may keep `max_in_flight` jobs going at once.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Coroutine
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, ClassVar

from easel.catalog import Model
from easel.config import Settings
from easel.media.encoding import GeneratedImage

# Awaited after each denoising step with (step, total); raises `Canceled` to stop the run.
ProgressFn = Callable[[int, int], Coroutine[Any, Any, None]]
# The same, called from the generation thread of a local backend.
StepFn = Callable[[int, int], None]


class Canceled(Exception):
    """The order was canceled while it ran."""


class LeaseLost(Canceled):
    """The worker no longer holds the order (the reaper or another worker took it back): stop
    without ending anything; whatever was started for it stays for whoever holds it now."""


class Rerouted(Exception):
    """The order goes on elsewhere: to the queue of catalog model `model_id` (an upstream
    model's local channel). The worker hands it over and delivers nothing for it."""

    def __init__(self, order_id: str, model_id: str) -> None:
        super().__init__(f"order {order_id} goes on as model {model_id}")
        self.order_id = order_id
        self.model_id = model_id


class BackendFailure(Exception):
    """The order failed for a reason the backend can name (`code`, `message` for the client)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class ImageSpec:
    """One output of a job: an image, or a clip when the job has frames."""

    order_id: str
    index: int  # position within its order
    prompt: str
    negative_prompt: str
    seed: int
    reference: bytes | None = None  # image-to-image input (PNG/JPEG/WebP bytes, checked)
    more_references: tuple[bytes, ...] = ()  # an edit's 2nd and later images
    mask: bytes | None = None  # inpainting: grayscale PNG the reference's size, white = repaint
    original_prompt: str | None = None  # the client's prompt, when `prompt` is its enhancement


@dataclass(frozen=True)
class LoraWeights:
    """A LoRA a job runs with, resolved to files: `source` is a Hugging Face repo id or a local
    folder, `file` the weights file in it (diffusers' `weight_name`)."""

    adapter: str  # the adapter's name on the pipeline
    source: str
    file: str | None
    scale: float
    label: dict[str, Any]  # how the order's status and the files' metadata name it
    trigger_words: tuple[str, ...] = ()


@dataclass(frozen=True)
class Job:
    """One pipeline call: the images of one order, or of several compatible orders (a batch).

    Everything but `images` is shared by every output; outputs come back in `images` order.
    """

    model: Model
    width: int
    height: int
    steps: int
    guidance: float
    images: list[ImageSpec]
    output_format: str = "png"
    frames: int = 0  # > 0: each output is an animation of exactly this many frames
    strength: float = 0.8  # image-to-image: how far from the reference (0 keeps it, 1 ignores it)
    scheduler: str | None = None  # catalog scheduler name; None keeps the pipeline's own
    loras: tuple[LoraWeights, ...] = ()  # loaded for this job only, removed after it

    @property
    def order_ids(self) -> list[str]:
        return list(dict.fromkeys(i.order_id for i in self.images))

    @property
    def seeds(self) -> list[int]:
        return [i.seed for i in self.images]


class Backend(ABC):
    """One loaded model."""

    family: str
    # Runs on this worker's device (and so shares it with every other local backend).
    local: ClassVar[bool] = True
    max_in_flight: ClassVar[int] = 1  # jobs one instance runs at once

    @classmethod
    def capacity(cls, model: Model) -> int:
        """Jobs of `model` one instance runs at once (an upstream model: its channels' sum)."""
        return cls.max_in_flight

    def __init__(self, model: Model, device: str, settings: Settings | None = None) -> None:
        """`settings`: the worker's, for its speedups (None: the pipeline as diffusers loads it)."""
        self.model = model
        self.device = device
        self.settings = settings

    @abstractmethod
    def load(self) -> None:
        """Load weights (blocking, in a thread); raise ModelUnavailable naming the model and
        how to provide it."""

    @abstractmethod
    async def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]: ...

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release memory."""


class LocalBackend(Backend):
    """A pipeline on this worker's device: `run` blocks in a worker thread, one job at a time."""

    def __init__(self, model: Model, device: str, settings: Settings | None = None) -> None:
        super().__init__(model, device, settings)
        self._one_at_a_time = asyncio.Lock()
        # Output files are written here while the device runs the next job (EASEL_ENCODE_THREADS).
        threads = settings.encode_threads if settings is not None else 1
        self.encoders = ThreadPoolExecutor(max(1, threads), thread_name_prefix="encode")

    def speed_up(self, pipe: object) -> None:
        """The worker's speedups (speedups.py), applied in place after loading."""
        if self.settings is not None:
            from easel.backends.speedups import apply_speedups

            apply_speedups(pipe, self.settings, self.device)

    async def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]:
        loop = asyncio.get_running_loop()
        last: list[Future[None]] = []

        def step(done: int, total: int) -> None:
            reported = asyncio.run_coroutine_threadsafe(progress(done, total), loop)
            if done < total:
                reported.result()
            else:  # the last step's report is written while the pipeline decodes
                last.append(reported)

        async with self._one_at_a_time:
            running = asyncio.ensure_future(asyncio.to_thread(self.run, job, step))
            try:
                images = await asyncio.shield(running)
            except asyncio.CancelledError:
                # The thread cannot be stopped: hold the device until it has finished.
                await asyncio.wait([running])
                raise
            finally:
                for reported in last:  # a cancel seen by the last report still ends the job
                    await asyncio.wrap_future(reported)
            return images

    @abstractmethod
    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        """The pipeline call, blocking; `progress` after each step (it may raise Canceled)."""
