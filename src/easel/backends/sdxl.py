"""Stable Diffusion XL and SDXL-Turbo text-to-image."""

from __future__ import annotations

from typing import Any

from easel.backends.base import Backend, GeneratedImage, Job, ProgressFn, encode_image
from easel.backends.loading import load_pipeline


class SDXLBackend(Backend):
    family = "sdxl"

    def __init__(self, model: Any, device: str) -> None:
        super().__init__(model, device)
        self.pipe: Any = None

    def load(self) -> None:
        from diffusers import StableDiffusionXLPipeline

        self.pipe = load_pipeline(StableDiffusionXLPipeline, self.model, self.device)

    def unload(self) -> None:
        self.pipe = None

    def generate(self, job: Job, progress: ProgressFn) -> list[GeneratedImage]:
        import torch

        total = job.steps

        def on_step_end(_pipe: Any, step: int, _t: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
            progress(step + 1, total)
            return kwargs

        generators = [torch.Generator("cpu").manual_seed(s) for s in job.seeds]
        with torch.inference_mode():
            result = self.pipe(
                prompt=[i.prompt for i in job.images],
                negative_prompt=[i.negative_prompt for i in job.images],
                width=job.width,
                height=job.height,
                num_inference_steps=job.steps,
                guidance_scale=job.guidance,
                generator=generators,
                callback_on_step_end=on_step_end,
                output_type="pil",
            )
        meta = {
            "model": self.model.id,
            "steps": job.steps,
            "guidance": job.guidance,
            "width": job.width,
            "height": job.height,
        }
        return [
            encode_image(
                img,
                job.output_format,
                spec.seed,
                {"prompt": spec.prompt, "negative_prompt": spec.negative_prompt, **meta},
            )
            for img, spec in zip(result.images, job.images, strict=True)
        ]
