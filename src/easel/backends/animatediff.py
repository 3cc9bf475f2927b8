"""AnimateDiff: a motion adapter animating a Stable Diffusion 1.5 model, exported as a clip.

The catalog model's `source` is the motion adapter and its `base` the SD 1.5 model. Clips longer
than the adapter's 16-frame context are made with FreeNoise's overlapping context windows.
"""

from __future__ import annotations

from typing import Any

from easel.backends.base import ImageSpec, Job, LocalBackend, StepFn
from easel.backends.common import render_clips
from easel.backends.loading import load_pipeline
from easel.config import Settings
from easel.media.encoding import ANIMATION_FORMATS, GeneratedImage

CONTEXT_FRAMES = 16  # SD 1.5 motion adapters are trained on 16-frame clips
CONTEXT_STRIDE = 4  # frames between the starts of overlapping context windows


class AnimateDiffBackend(LocalBackend):
    family = "animatediff"

    def __init__(self, model: Any, device: str, settings: Settings | None = None) -> None:
        super().__init__(model, device, settings)
        self.pipe: Any = None

    def load(self) -> None:
        from diffusers import AnimateDiffPipeline, DDIMScheduler, MotionAdapter

        adapter = load_pipeline(MotionAdapter, self.model, self.device, part="motion adapter")
        pipe = load_pipeline(
            AnimateDiffPipeline,
            self.model,
            self.device,
            field="base",
            part="base model",
            motion_adapter=adapter,
        )
        # The sampler AnimateDiff's motion modules were trained for, whatever the base ships.
        pipe.scheduler = DDIMScheduler.from_config(  # type: ignore[no-untyped-call]
            pipe.scheduler.config,
            beta_schedule="linear",
            clip_sample=False,
            timestep_spacing="linspace",
            steps_offset=1,
        )
        self.speed_up(pipe)
        self.pipe = pipe

    def unload(self) -> None:
        self.pipe = None

    def _use_context_windows(self, frames: int) -> None:
        wanted = frames > CONTEXT_FRAMES
        if wanted and not self.pipe.free_noise_enabled:
            self.pipe.enable_free_noise(
                context_length=CONTEXT_FRAMES, context_stride=CONTEXT_STRIDE
            )
        elif not wanted and self.pipe.free_noise_enabled:
            self.pipe.disable_free_noise()

    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        import torch

        if job.frames < 1:
            raise ValueError(
                f"model {self.model.id!r} makes animations; the order needs an animation product"
            )
        if job.output_format not in ANIMATION_FORMATS:
            raise ValueError(f"animations are {ANIMATION_FORMATS}, not {job.output_format!r}")
        self._use_context_windows(job.frames)

        def make_clip(spec: ImageSpec, on_step_end: Any) -> Any:
            # One call per clip: FreeNoise takes one prompt.
            with torch.inference_mode():
                result = self.pipe(
                    prompt=spec.prompt,
                    negative_prompt=spec.negative_prompt,
                    num_frames=job.frames,
                    width=job.width,
                    height=job.height,
                    num_inference_steps=job.steps,
                    guidance_scale=job.guidance,
                    generator=torch.Generator("cpu").manual_seed(spec.seed),
                    callback_on_step_end=on_step_end,
                    output_type="np",
                )
            return result.frames[0]

        return render_clips(self.model, job, progress, make_clip)
