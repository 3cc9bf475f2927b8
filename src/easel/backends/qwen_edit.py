"""Qwen-Image-Edit-Plus (Alibaba; `Qwen/Qwen-Image-Edit-2511`): instruction editing of 1 to 3
reference images ("Picture 1", "Picture 2", ... in the prompt), Chinese and English.

The pipeline takes one prompt per call, so each order is its own call (the worker claims no
followers for an edit model) and its n images are `num_images_per_prompt`, each with its own
seeded generator. The output size is the job's (the dialects follow the last image's aspect ratio
unless the client sets a size). Guidance is `true_cfg_scale`, as for Qwen-Image.

Its `Qwen2VLProcessor` insists on a video processor, which needs torchvision; editing never sends
video, so the processor is loaded from the weights' `processor` folder with the image processor
and the tokenizer only (`ImageOnlyProcessor`), and torchvision is not needed.
"""

from __future__ import annotations

from dataclasses import replace
from functools import cache
from itertools import groupby
from pathlib import Path
from typing import Any

from easel.backends.base import Job, LocalBackend, StepFn
from easel.backends.common import (
    crop_center,
    generators,
    metadata,
    round_up,
    step_callback,
)
from easel.backends.decoding import decode_image
from easel.backends.loading import load_pipeline
from easel.backends.numerics import checked_images
from easel.backends.qwen_image import CFG_THRESHOLD
from easel.media.encoding import GeneratedImage, encode_later

PROCESSOR_FOLDER = "processor"
SIZE_MULTIPLE = 16  # 8x VAE, then 2x2 patches


@cache
def image_only_processor_class() -> Any:
    """Qwen2VLProcessor with the image processor and the tokenizer only."""
    from transformers import Qwen2VLProcessor
    from transformers.processing_utils import ProcessorMixin

    class ImageOnlyProcessor(Qwen2VLProcessor):
        def __init__(
            self, image_processor: Any = None, tokenizer: Any = None, chat_template: Any = None
        ) -> None:
            self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
            self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
            self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
            self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
            init = ProcessorMixin.__init__  # skips Qwen2VLProcessor's, which wants video
            init(self, image_processor, tokenizer, chat_template=chat_template)  # type: ignore[no-untyped-call]

    return ImageOnlyProcessor


def image_only_processor(source: str) -> Any:
    """The weights' processor (its `processor` folder) without a video processor."""
    return image_only_processor_class().from_pretrained(source, subfolder=PROCESSOR_FOLDER)


class QwenImageEditBackend(LocalBackend):
    family = "qwen-image-edit"
    pipeline = "QwenImageEditPlusPipeline"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.pipe: Any = None

    def load(self) -> None:
        import diffusers

        source = str(Path(self.model.source).expanduser()) if self.model.source else ""
        try:
            processor = image_only_processor(source)
        except (OSError, ValueError):
            processor = None  # load_pipeline then says what is missing, and how to get it
        components = {"processor": processor} if processor is not None else {}
        self.pipe = load_pipeline(
            getattr(diffusers, self.pipeline), self.model, self.device, **components
        )
        self.speed_up(self.pipe)

    def unload(self) -> None:
        self.pipe = None

    def run(self, job: Job, progress: StepFn) -> list[GeneratedImage]:
        import torch

        width = round_up(job.width, SIZE_MULTIPLE)
        height = round_up(job.height, SIZE_MULTIPLE)
        out: list[GeneratedImage] = []
        for _order, group in groupby(job.images, key=lambda spec: spec.order_id):
            specs = list(group)
            first = specs[0]
            if first.reference is None:
                raise ValueError(f"{self.model.id} edits images; the order has none")
            images = [decode_image(data) for data in (first.reference, *first.more_references)]
            kwargs: dict[str, Any] = {"prompt": first.prompt}
            if job.guidance > CFG_THRESHOLD:
                kwargs |= {
                    "true_cfg_scale": job.guidance,
                    "negative_prompt": first.negative_prompt or " ",
                }
            else:
                kwargs["true_cfg_scale"] = 1.0
            part = replace(job, images=specs)
            with torch.inference_mode():
                result = self.pipe(
                    image=images,
                    width=width,
                    height=height,
                    num_inference_steps=job.steps,
                    num_images_per_prompt=len(specs),
                    generator=generators(part),
                    callback_on_step_end=step_callback(progress),
                    output_type="np",
                    **kwargs,
                )
            for image, spec in zip(checked_images(result.images, specs), specs, strict=True):
                meta = metadata(self.model, job, spec) | {"images": len(images)}
                meta.pop("strength", None)
                cropped = crop_center(image, job.width, job.height)
                out.append(encode_later(cropped, job.output_format, spec.seed, meta, self.encoders))
        return out
