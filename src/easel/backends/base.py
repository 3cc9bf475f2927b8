"""The interface between the worker and a model family."""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, PngImagePlugin

from easel.catalog import Model
from easel.config import Settings

# Called after each denoising step with (step, total); raises `Canceled` to stop the run.
ProgressFn = Callable[[int, int], None]

CONTENT_TYPES = {
    "png": "image/png",
    "jpeg": "image/jpeg",
    "webp": "image/webp",
    "gif": "image/gif",
    "mp4": "video/mp4",
}
ANIMATION_FORMATS = ("mp4", "gif", "webp")  # the first is the default


class Canceled(Exception):
    """The order was canceled while it ran."""


@dataclass(frozen=True)
class ImageSpec:
    """One output of a job: an image, or a clip when the job has frames."""

    order_id: str
    index: int  # position within its order
    prompt: str
    negative_prompt: str
    seed: int
    reference: bytes | None = None  # image-to-image input (PNG/JPEG/WebP bytes, checked)


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
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def order_ids(self) -> list[str]:
        return list(dict.fromkeys(i.order_id for i in self.images))

    @property
    def seeds(self) -> list[int]:
        return [i.seed for i in self.images]


@dataclass(frozen=True)
class GeneratedImage:
    data: bytes
    content_type: str
    seed: int
    width: int
    height: int


class Backend(ABC):
    """One loaded model. `generate` runs in a worker thread and may block for a long time."""

    family: str

    def __init__(self, model: Model, device: str, settings: Settings | None = None) -> None:
        """`settings`: the worker's, for its speedups (None: the pipeline as diffusers loads it)."""
        self.model = model
        self.device = device
        self.settings = settings

    def speed_up(self, pipe: Any) -> None:
        """The worker's speedups (speedups.py), applied in place after loading."""
        if self.settings is not None:
            from easel.backends.speedups import apply_speedups

            apply_speedups(pipe, self.settings, self.device)

    @abstractmethod
    def load(self) -> None:
        """Load weights; raise ModelUnavailable naming the model and how to provide it."""

    @abstractmethod
    def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]: ...

    def unload(self) -> None:  # noqa: B027 - optional hook
        """Release memory."""


def encode_image(
    image: Image.Image, fmt: str, seed: int, metadata: dict[str, Any]
) -> GeneratedImage:
    """Encode with the generation parameters embedded (PNG text chunks, else EXIF description)."""
    buf = io.BytesIO()
    text = json.dumps({**metadata, "seed": seed}, ensure_ascii=False)
    if fmt == "png":
        info = PngImagePlugin.PngInfo()
        info.add_text("parameters", text)
        for key in ("prompt", "model"):
            if key in metadata:
                info.add_itxt(key, str(metadata[key]))
        info.add_text("seed", str(seed))
        image.save(buf, format="PNG", pnginfo=info)
    else:
        exif = Image.Exif()
        # ImageDescription is ASCII-only: escape non-ASCII (a Chinese prompt) inside the JSON.
        exif[0x010E] = json.dumps({**metadata, "seed": seed}, ensure_ascii=True)
        image.convert("RGB").save(buf, format=fmt.upper(), exif=exif.tobytes(), quality=92)
    return GeneratedImage(
        data=buf.getvalue(),
        content_type=CONTENT_TYPES[fmt],
        seed=seed,
        width=image.width,
        height=image.height,
    )
