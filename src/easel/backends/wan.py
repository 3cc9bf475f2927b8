"""Wan 2.2 TI2V-5B: a video from text, or from an image as its first frame, exported as a clip.

One set of weights does both: `WanPipeline` from text and `WanImageToVideoPipeline`, made from
the same components, from an image. TI2V-5B makes 24 fps clips of 4k+1 frames up to 121, trained
at 1280x704 / 704x1280. Sides must be multiples of the VAE's scale times the patch (32): a size
that is not (1280x720) is made at the next multiple up and cropped to what was asked; the first
frame is turned upright (EXIF), fitted (scaled, centre-cropped) to the size asked and padded with
its edge pixels to the size made, so the clip's first frame is the client's image. One clip per
pipeline call.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from easel.backends.base import ImageSpec, Job, LocalBackend, StepFn
from easel.backends.common import fit_reference, render_clips
from easel.backends.loading import load_pipeline
from easel.config import Settings
from easel.media.encoding import ANIMATION_FORMATS, GeneratedImage

MAX_SEQUENCE_LENGTH = 512  # T5 tokens of the prompt (Wan's default)


def padded(side: int, multiple: int) -> int:
    return -(-side // multiple) * multiple


def centre_crop(clip: np.ndarray, width: int, height: int) -> np.ndarray:
    """(frames, H, W, C) -> (frames, height, width, C), the middle of each frame."""
    top = (clip.shape[1] - height) // 2
    left = (clip.shape[2] - width) // 2
    return clip[:, top : top + height, left : left + width]


def first_frame(reference: bytes, width: int, height: int, multiple: int) -> Image.Image:
    """The client's image upright and fitted to the size asked, then edge-padded to the size
    made (sides multiples of `multiple`) so that `centre_crop` gives it back as it is."""
    image = np.asarray(fit_reference(reference, width, height).convert("RGB"))
    made_w, made_h = padded(width, multiple), padded(height, multiple)
    top, left = (made_h - height) // 2, (made_w - width) // 2
    pad = ((top, made_h - height - top), (left, made_w - width - left), (0, 0))
    return Image.fromarray(np.pad(image, pad, mode="edge"))


class WanBackend(LocalBackend):
    family = "wan"

    def __init__(self, model: Any, device: str, settings: Settings | None = None) -> None:
        super().__init__(model, device, settings)
        self.pipe: Any = None
        self.first_frame_pipe: Any = None

    def load(self) -> None:
        import torch
        from diffusers import WanImageToVideoPipeline, WanPipeline

        pipe = load_pipeline(WanPipeline, self.model, self.device)
        self.speed_up(pipe)
        # The Wan VAE decodes in float32 (its authors' setting); it is small beside the rest.
        pipe.vae.to(torch.float32)
        self.pipe = pipe
        self.first_frame_pipe = WanImageToVideoPipeline.from_pipe(pipe)
        self.first_frame_pipe.set_progress_bar_config(disable=True)

    def unload(self) -> None:
        self.pipe = self.first_frame_pipe = None

    @property
    def size_multiple(self) -> int:
        patch = self.pipe.transformer.config.patch_size
        return int(self.pipe.vae_scale_factor_spatial * patch[1])

    def check(self, job: Job) -> None:
        step = int(self.pipe.vae_scale_factor_temporal)
        if job.frames < 1 or (job.frames - 1) % step:
            raise ValueError(
                f"model {self.model.id!r} makes clips of {step}k+1 frames, not {job.frames}"
            )
        if job.output_format not in ANIMATION_FORMATS:
            raise ValueError(f"videos are {ANIMATION_FORMATS}, not {job.output_format!r}")

    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        self.check(job)
        multiple = self.size_multiple
        width, height = padded(job.width, multiple), padded(job.height, multiple)

        def make_clip(spec: ImageSpec, on_step_end: Any) -> np.ndarray:
            clip = self._clip(job, spec, width, height, on_step_end)
            return centre_crop(clip, job.width, job.height)

        def first_frame_given(spec: ImageSpec) -> dict[str, Any]:
            return {"first_frame": spec.reference is not None}

        return render_clips(self.model, job, progress, make_clip, first_frame_given)

    def _clip(
        self, job: Job, spec: ImageSpec, width: int, height: int, on_step_end: Any
    ) -> np.ndarray:
        """One clip, (frames, height, width, 3) floats in [0, 1], at the padded size."""
        import torch

        call: dict[str, Any] = {
            "prompt": spec.prompt,
            "negative_prompt": spec.negative_prompt or None,
            "num_frames": job.frames,
            "width": width,
            "height": height,
            "num_inference_steps": job.steps,
            "guidance_scale": job.guidance,
            "generator": torch.Generator("cpu").manual_seed(spec.seed),
            "callback_on_step_end": on_step_end,
            "max_sequence_length": MAX_SEQUENCE_LENGTH,
            "output_type": "np",
        }
        pipe = self.pipe
        if spec.reference is not None:
            call["image"] = first_frame(spec.reference, job.width, job.height, self.size_multiple)
            pipe = self.first_frame_pipe
        with torch.inference_mode():
            result = pipe(**call)
        clip: np.ndarray = result.frames[0]
        return clip
