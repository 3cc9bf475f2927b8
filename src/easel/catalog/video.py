"""Videos made by length: seconds -> frames, and the catalog fields that bound them.

A model with `seconds` (Wan 2.2 TI2V-5B: 24 fps, frames 4k+1 up to 121) makes a clip of the
length a request asks for: `seconds * fps` frames rounded up to a multiple of `frame_step`, plus
the first frame. A model without makes the fixed-length clips of seed 000's animation products.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from easel.catalog.loader import Model


def by_length(model: Model) -> bool:
    """Whether the model's clips are as long as a request asks (else a product's frames)."""
    return model.seconds > 0


def frames_for(model: Model, seconds: int) -> int:
    """Frames of a `seconds`-long clip of `model`."""
    step = max(1, model.frame_step)
    return math.ceil(seconds * model.fps / step) * step + 1


def longest_seconds(model: Model) -> int:
    """The longest whole-second clip the model makes (its max_frames)."""
    seconds = 0
    while frames_for(model, seconds + 1) <= model.max_frames:
        seconds += 1
    return seconds


# A family's frames come in steps of its VAE's temporal compression: 4k+1.
FRAME_STEPS = {"wan": 4}


def check_model(model: Model) -> str | None:
    """A catalog error for the model's video-length fields, or None."""
    where = f"models.{model.id}"
    if min(model.seconds, model.max_frames, model.credits_per_second) < 0 or model.frame_step < 1:
        return f"{where}: seconds, max_frames and credits_per_second must be >= 0, frame_step >= 1"
    step = FRAME_STEPS.get(model.family)
    if step is not None and model.frame_step != step:
        return (
            f"{where}: a {model.family} model needs frame_step = {step} (its VAE's), "
            f"not {model.frame_step}"
        )
    if by_length(model) and model.max_pixels <= 0:
        return f"{where}: a model that makes videos by length needs max_pixels (a frame's) > 0"
    if by_length(model) and frames_for(model, model.seconds) > model.max_frames:
        return (
            f"{where}: a {model.seconds} s clip at {model.fps} fps is "
            f"{frames_for(model, model.seconds)} frames, more than max_frames = {model.max_frames}"
        )
    return None
