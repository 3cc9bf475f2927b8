"""What every diffusers image family shares: one pipeline call per Job, text- or image-to-image;
and what the video families share: one pipeline call per clip (`render_clips`).

A family file subclasses `DiffusersBackend`, names its two diffusers pipeline classes and, where
its pipeline takes guidance differently, overrides `guidance_kwargs`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar

from PIL import Image, ImageOps

from easel.backends.base import BackendFailure, ImageSpec, Job, LocalBackend, LoraWeights, StepFn
from easel.backends.decoding import decode_image
from easel.backends.inpaint import Inpainting, inpaintings, keep_unmasked, on_canvas
from easel.backends.loading import load_pipeline
from easel.backends.numerics import check_outputs, checked_images, to_uint8
from easel.catalog import Model
from easel.catalog.capabilities import IMAGE_TO_IMAGE, INPAINT, TEXT_TO_IMAGE, model_capabilities
from easel.catalog.schedulers import SCHEDULERS, is_flow_matching
from easel.config import Settings
from easel.media.encoding import GeneratedImage, encode_later
from easel.media.video import encode_animation

# Longest schedule image-to-image may stretch to so a small strength still runs one step.
MAX_SCHEDULE = 1000


def make_scheduler(default: Any, name: str | None) -> Any:
    """The scheduler a job names, configured like the pipeline's own; `default` for None."""
    if name is None:
        return default
    if name not in SCHEDULERS:
        raise ValueError(f"unknown scheduler {name!r}; known: {sorted(SCHEDULERS)}")
    import diffusers

    cls_name, options = SCHEDULERS[name]
    return getattr(diffusers, cls_name).from_config(default.config, **options)


def fit_reference(data: bytes, width: int, height: int) -> Image.Image:
    """Decode a reference image and scale and center-crop it to exactly width x height."""
    image = decode_image(data)
    if image.size == (width, height):  # kept pixel for pixel (inpainting keeps what is unmasked)
        return image
    return ImageOps.fit(image, (width, height), Image.Resampling.LANCZOS)


def references(job: Job, width: int, height: int) -> list[Image.Image] | None:
    """Every output's fitted reference, or None for text-to-image."""
    given = [spec.reference for spec in job.images]
    if all(data is None for data in given):
        return None
    if any(data is None for data in given):
        raise ValueError(
            "a job mixes image-to-image and text-to-image outputs; batch them separately"
        )
    return [fit_reference(data, width, height) for data in given if data is not None]


def schedule_length(steps: int, strength: float) -> int:
    """Steps to schedule so that image-to-image at `strength` runs at least one of them.

    The pipelines run about steps x strength steps and refuse to run none.
    """
    length = max(steps, math.ceil(1 / strength))
    while int(length * strength) < 1:
        length += 1
    return length


def generators(job: Job) -> list[Any]:
    """One CPU generator per output, seeded with its seed: the same on every device."""
    import torch

    return [torch.Generator("cpu").manual_seed(seed) for seed in job.seeds]


def step_callback(progress: StepFn) -> Any:
    """A `callback_on_step_end` reporting step k of the pipeline's own step count."""

    def on_step_end(pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        progress(step + 1, pipe.num_timesteps)
        return kwargs

    return on_step_end


# One clip of a spec: (frames, height, width, 3) floats in [0, 1] at the job's size; the second
# argument is the pipeline's `callback_on_step_end`.
MakeClip = Callable[[ImageSpec, Any], Any]


def render_clips(
    model: Model,
    job: Job,
    progress: StepFn,
    make_clip: MakeClip,
    extra: Callable[[ImageSpec], dict[str, Any]] | None = None,
) -> list[GeneratedImage]:
    """One pipeline call per clip (a clip is already a batch of frames), progress counted over
    the steps of every clip, each checked, counted and encoded at the model's fps with its
    parameters (and `extra`'s)."""
    total = job.steps * len(job.images)
    clips = []
    for number, spec in enumerate(job.images):
        done = number * job.steps

        def on_step_end(
            _pipe: Any, step: int, _t: Any, kwargs: dict[str, Any], done: int = done
        ) -> dict[str, Any]:
            progress(done + min(step + 1, job.steps), total)
            return kwargs

        clip = make_clip(spec, on_step_end)
        check_outputs([clip], [spec])  # the clip as a whole: a fade to black is fine
        if len(clip) != job.frames:
            raise RuntimeError(f"the pipeline made {len(clip)} frames, not {job.frames}")
        frames = [Image.fromarray(to_uint8(frame)) for frame in clip]
        meta = metadata(model, job, spec) | (extra(spec) if extra else {})
        clips.append(encode_animation(frames, job.output_format, model.fps, spec.seed, meta))
    return clips


def metadata(model: Model, job: Job, spec: ImageSpec) -> dict[str, Any]:
    """The generation parameters embedded in each output file (the seed is added on encoding)."""
    meta: dict[str, Any] = {
        "model": model.id,
        "prompt": spec.prompt,
        "negative_prompt": spec.negative_prompt,
        "steps": job.steps,
        "guidance": job.guidance,
        "width": job.width,
        "height": job.height,
    }
    if spec.original_prompt is not None:
        meta["original_prompt"] = spec.original_prompt
    if job.scheduler is not None:
        meta["scheduler"] = job.scheduler
    if spec.mask is not None:
        meta["inpaint"] = True
    elif spec.reference is not None:
        meta["strength"] = job.strength
    if job.loras:
        meta["loras"] = [w.label for w in job.loras]
    return meta


def round_up(value: int, multiple: int) -> int:
    return -(-value // multiple) * multiple


def crop_center(image: Image.Image, width: int, height: int) -> Image.Image:
    if image.size == (width, height):
        return image
    left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


class DiffusersBackend(LocalBackend):
    """A diffusers text-to-image pipeline plus its image-to-image twin on the same weights, and
    an inpainting twin where the model can inpaint (a model that only inpaints, on dedicated
    inpainting weights, loads the inpainting pipeline alone)."""

    text_to_image: ClassVar[str]  # diffusers pipeline class names
    image_to_image: ClassVar[str]
    inpainting: ClassVar[str | None] = None
    # Sides the pipeline accepts are multiples of this; others are generated larger and cropped.
    size_multiple: ClassVar[int] = 8
    image_to_image_sized: ClassVar[bool] = True  # its img2img takes width and height

    def __init__(self, model: Model, device: str, settings: Settings | None = None) -> None:
        super().__init__(model, device, settings)
        self.pipe: Any = None
        self.img2img: Any = None
        self.inpaint: Any = None
        self.default_scheduler: Any = None

    def load(self) -> None:
        import diffusers

        capabilities = model_capabilities(self.model)
        inpaints = INPAINT in capabilities and self.inpainting is not None
        if inpaints and not {TEXT_TO_IMAGE, IMAGE_TO_IMAGE} & set(capabilities):
            self.pipe = load_pipeline(
                getattr(diffusers, str(self.inpainting)), self.model, self.device
            )
            self.speed_up(self.pipe)
            self.inpaint = self.pipe
        else:
            pipe_cls = getattr(diffusers, self.text_to_image)
            self.pipe = load_pipeline(pipe_cls, self.model, self.device)
            self.speed_up(self.pipe)
            # Share every component: no second copy of the weights.
            self.img2img = getattr(diffusers, self.image_to_image).from_pipe(self.pipe)
            self.img2img.set_progress_bar_config(disable=True)
            if inpaints:
                self.inpaint = getattr(diffusers, str(self.inpainting)).from_pipe(self.pipe)
                self.inpaint.set_progress_bar_config(disable=True)
        self.default_scheduler = self.pipe.scheduler

    def unload(self) -> None:
        self.pipe = self.img2img = self.inpaint = self.default_scheduler = None

    def guidance_kwargs(self, job: Job) -> dict[str, Any]:
        """Prompts and guidance in this family's pipeline arguments."""
        return {
            "prompt": [spec.prompt for spec in job.images],
            "negative_prompt": [spec.negative_prompt for spec in job.images],
            "guidance_scale": job.guidance,
        }

    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        import torch

        if job.scheduler is not None and is_flow_matching(self.model.family):
            raise ValueError(
                f"{self.model.id} is a flow-matching model; scheduler {job.scheduler!r} cannot "
                "drive it (only steps change for it)"
            )
        width = round_up(job.width, self.size_multiple)
        height = round_up(job.height, self.size_multiple)
        kwargs = self.guidance_kwargs(job)
        masked = [spec.mask for spec in job.images if spec.mask is not None]
        refs = None if masked else references(job, width, height)
        inpainting: dict[str, Inpainting] = {}
        if masked:
            if self.inpaint is None or len(masked) < len(job.images):
                raise ValueError(f"{self.model.id} cannot inpaint this job; batch masks apart")
            pipe = self.inpaint
            inpainting = inpaintings(job)  # once per order, not per image
            parts = [inpainting[spec.order_id] for spec in job.images]
            kwargs |= {
                "image": [on_canvas(p.original, width, height) for p in parts],
                "mask_image": [on_canvas(p.mask, width, height, fill=0) for p in parts],
                "width": width,
                "height": height,
                "strength": 1.0,  # the masked part is drawn anew
                "num_inference_steps": job.steps,
            }
        elif refs is None:
            pipe = self.pipe
            kwargs |= {"width": width, "height": height, "num_inference_steps": job.steps}
        elif job.strength * MAX_SCHEDULE < 1:  # nothing to change: the reference is the answer
            return self._encode(job, refs)
        else:
            pipe = self.img2img
            kwargs |= {
                "image": refs,
                "strength": job.strength,
                "num_inference_steps": schedule_length(job.steps, job.strength),
            }
            if self.image_to_image_sized:
                kwargs |= {"width": width, "height": height}
        pipe.scheduler = make_scheduler(self.default_scheduler, job.scheduler)
        loras = [w for w in job.loras if w.scale != 0]  # at scale 0 a LoRA changes nothing
        refuse = self._load_loras(loras)
        try:
            with torch.inference_mode():
                result = pipe(
                    generator=generators(job),
                    callback_on_step_end=step_callback(progress),
                    output_type="np",  # checked for NaN / black before encoding
                    **kwargs,
                )
        finally:
            if loras:
                self._unload_loras(refuse)
        images = checked_images(result.images, job.images)
        if masked:
            kept = [
                keep_unmasked(inpainting[spec.order_id], crop_center(image, job.width, job.height))
                for image, spec in zip(images, job.images, strict=True)
            ]
            return self._encode(job, kept)
        return self._encode(job, images)

    def _denoiser(self) -> Any:
        return getattr(self.pipe, "unet", None) or getattr(self.pipe, "transformer", None)

    def _load_loras(self, loras: list[LoraWeights]) -> bool:
        """Load `loras` as PEFT adapters on the shared components (the img2img twin sees them
        too) and weight them; True when the denoiser's fused attention was undone for them (a
        fused QKV projection would bypass adapters on the separate ones)."""
        if not loras:
            return False
        from diffusers.models.attention_processor import FusedAttnProcessor2_0

        denoiser = self._denoiser()
        processors = getattr(denoiser, "attn_processors", None) or {}
        fused = any(isinstance(p, FusedAttnProcessor2_0) for p in processors.values())
        if fused:
            denoiser.unfuse_qkv_projections()
        try:
            for lora in loras:
                self.pipe.load_lora_weights(
                    lora.source, weight_name=lora.file, adapter_name=lora.adapter
                )
            self.pipe.set_adapters(
                [w.adapter for w in loras], adapter_weights=[w.scale for w in loras]
            )
        except Exception as exc:
            self._unload_loras(fused)
            names = ", ".join(str(w.label.get("name") or w.label.get("url")) for w in loras)
            raise BackendFailure(
                "lora_unavailable",
                f"LoRA {names} could not be loaded on {self.model.id} ({type(exc).__name__}: "
                f"{str(exc)[:300]}); is it a {self.model.family} LoRA? The order was refunded",
            ) from exc
        return fused

    def _unload_loras(self, refuse: bool) -> None:
        """Remove every adapter: the cached pipeline is the base model again."""
        self.pipe.unload_lora_weights()
        if refuse:
            self._denoiser().fuse_qkv_projections()

    def _encode(self, job: Job, images: list[Image.Image]) -> list[GeneratedImage]:
        return [
            encode_later(
                crop_center(image, job.width, job.height),
                job.output_format,
                spec.seed,
                metadata(self.model, job, spec),
                self.encoders,
            )
            for image, spec in zip(images, job.images, strict=True)
        ]
