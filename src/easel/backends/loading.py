"""Turn a catalog `source` (repo id, local folder, single file) into a loaded diffusers pipeline."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from easel.catalog import Model
from easel.errors import ModelUnavailable

log = logging.getLogger(__name__)

SINGLE_FILE_SUFFIXES = (".safetensors", ".ckpt")


def pick_device(setting: str) -> str:
    if setting != "auto":
        return setting
    import torch

    if torch.cuda.is_available():
        return "cuda"
    if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        return "mps"
    return "cpu"


def pick_dtype(device: str) -> Any:
    import torch

    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device == "mps":
        return torch.float16
    return torch.float32


def _how_to_provide(model: Model, field: str = "source") -> str:
    return (
        f"download it on this machine (`easel models pull {model.id}`, or "
        f"`hf download {getattr(model, field)}`) "
        f"or point the model at a local diffusers folder or .safetensors file in the operator "
        f'catalog (EASEL_CATALOG: [models.{model.id}] {field} = "/path/to/weights")'
    )


def load_pipeline(
    pipeline_cls: Any,
    model: Model,
    device: str,
    *,
    field: str = "source",
    part: str = "",
    **components: Any,
) -> Any:
    """Load the model's `field` (a catalog key naming weights) with `pipeline_cls`.

    `part` names what is loaded in messages (e.g. "motion adapter"); `components` go to
    `from_pretrained` / `from_single_file`. ModelUnavailable says how to fix a failure.
    """
    source = str(getattr(model, field) or "")
    what = f"model {model.id!r}" + (f" {part}" if part else "")
    path = Path(source).expanduser()
    dtype = pick_dtype(device)
    looks_local = source.startswith(("/", "./", "../", "~")) or path.exists()
    try:
        if path.is_file() and path.suffix in SINGLE_FILE_SUFFIXES:
            kwargs: dict[str, Any] = {"dtype": dtype, **components}
            if model.config and field == "source":
                kwargs["config"] = model.config
            pipe = pipeline_cls.from_single_file(str(path), **kwargs)
        elif path.is_dir():
            pipe = pipeline_cls.from_pretrained(str(path), dtype=dtype, **components)
        elif looks_local:
            raise ModelUnavailable(
                f"{what}: {field} {source} does not exist; " + _how_to_provide(model, field)
            )
        else:
            kwargs = {"dtype": dtype, **components}
            if model.variant and field == "source":
                kwargs["variant"] = model.variant
            pipe = pipeline_cls.from_pretrained(source, **kwargs)
        pipe.to(device)
    except ModelUnavailable:
        raise
    except (OSError, ValueError, NotImplementedError) as exc:
        # NotImplementedError: weights missing from a checkpoint stay on the meta device.
        if looks_local:
            why = "the local weights are incomplete or do not match the model family"
        else:
            offline = os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0")
            why = "not in the local Hugging Face cache" + (
                " and HF_HUB_OFFLINE is set" if offline else " and the hub could not be reached"
            )
        detail = str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__
        raise ModelUnavailable(
            f"{what} could not be loaded from {source!r} ({why}: {detail}); "
            + _how_to_provide(model, field)
        ) from exc
    if hasattr(pipe, "set_progress_bar_config"):  # a pipeline, not a single model
        pipe.set_progress_bar_config(disable=True)
    log.info("model loaded", extra={"action": "load", "model": model.id, "device": device})
    return pipe
