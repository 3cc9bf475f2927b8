"""Make a loaded diffusers pipeline faster on its device, one switchable speedup at a time.

A family backend calls `apply_speedups(pipe, settings, device)` right after loading, and may call
`warm_up` so that compilation and kernel selection happen before the first order. Speedups change
the pipeline's modules in place, so a twin pipeline made with `from_pipe` shares them. One that
does not fit the pipeline is skipped with the reason; one that fails logs a warning and leaves the
pipeline working.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from easel.backends.loading import pick_dtype
from easel.config import Settings

log = logging.getLogger(__name__)

CONV_MODELS = ("unet", "vae")  # components built of 2-D convolutions
ATTENTION_MODELS = ("unet", "transformer", "vae")

# Returns None when applied, else why it does not apply to this pipeline.
Step = Callable[[Any, Settings, str], str | None]


@dataclass
class Speedups:
    """What `apply_speedups` did: the speedups applied, and why each other one asked for was not."""

    applied: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)


def apply_speedups(pipe: Any, settings: Settings, device: str) -> Speedups:
    """Apply the speedups `settings` turn on to `pipe`, in place, in an order that composes."""
    steps: list[tuple[str, bool, Step]] = [
        ("half_precision", device.startswith("cuda"), _half_precision),
        ("vae_fp16_fix", bool(settings.vae_fp16_fix), _vae_fp16_fix),
        ("sdpa", settings.sdpa, _sdpa),
        ("fuse_qkv", settings.fuse_qkv, _fuse_qkv),
        ("channels_last", settings.channels_last, _channels_last),
        ("vae_upcast", settings.vae_upcast != "off", _vae_upcast),
        ("compile", settings.compile, _compile),
    ]
    done = Speedups()
    for name, wanted, step in steps:
        if not wanted:
            continue
        try:
            why_not = step(pipe, settings, device)
        except Exception as exc:  # a speedup must never cost the model
            why_not = f"failed: {type(exc).__name__}: {exc}"
            log.warning(
                "speedup not applied: %s",
                why_not,
                extra={"action": "speedup", "speedup": name},
            )
        if why_not is None:
            done.applied.append(name)
        else:
            done.skipped[name] = why_not
    log.info(
        "speedups applied: %s",
        ", ".join(done.applied) or "none",
        extra={"action": "speedups", "applied": done.applied, "skipped": done.skipped},
    )
    return done


def warm_up(
    pipe: Any, *, width: int, height: int, batch: int = 1, steps: int = 2, **call: Any
) -> float:
    """Run `pipe` once at this size and batch; return the seconds it took.

    A compiled denoiser compiles for each new batch size and image size, so warm up with the
    shapes orders will use (`call` takes e.g. `guidance_scale`, which doubles the UNet batch).
    """
    import torch

    started = time.perf_counter()
    with torch.inference_mode():
        pipe(
            prompt=["warm-up"] * batch,
            width=width,
            height=height,
            num_inference_steps=steps,
            generator=[torch.Generator("cpu").manual_seed(i) for i in range(batch)],
            output_type="np",
            **call,
        )
    return time.perf_counter() - started


def _models(pipe: Any, names: tuple[str, ...]) -> Iterator[tuple[str, Any]]:
    import torch

    for name in names:
        model = getattr(pipe, name, None)
        if isinstance(model, torch.nn.Module):
            yield name, model


def _component(pipe: Any, *names: str) -> Any:
    """The first of these torch components the pipeline has, or None."""
    return next((model for _, model in _models(pipe, names)), None)


def _half_precision(pipe: Any, settings: Settings, device: str) -> str | None:
    import torch

    dtype = pick_dtype(device)
    denoiser = _component(pipe, "unet", "transformer")
    if denoiser is None or denoiser.dtype != torch.float32:
        return "the pipeline is already in half precision"
    pipe.to(dtype=dtype)
    return None


def _vae_fp16_fix(pipe: Any, settings: Settings, device: str) -> str | None:
    """Load fp16-safe VAE weights into the pipeline's VAE (in place: a twin pipeline shares it)."""
    import diffusers

    kind: Any = diffusers.AutoencoderKL
    vae = _component(pipe, "vae")
    if not isinstance(vae, kind):
        return "the pipeline's VAE is not an AutoencoderKL"
    fixed = kind.from_pretrained(settings.vae_fp16_fix)
    for key in ("latent_channels", "scaling_factor", "block_out_channels"):
        ours, theirs = _plain(vae.config.get(key)), _plain(fixed.config.get(key))
        if ours != theirs:
            return (
                f"EASEL_VAE_FP16_FIX {settings.vae_fp16_fix} is made for another VAE "
                f"({key} {theirs} here {ours})"
            )
    vae.load_state_dict(fixed.state_dict())
    vae.register_to_config(force_upcast=False)
    return None


def _plain(value: Any) -> Any:
    """Config values compare equal whether saved as lists or built with tuples."""
    return list(value) if isinstance(value, tuple) else value


def _sdpa(pipe: Any, settings: Settings, device: str) -> str | None:
    from diffusers.models import attention_processor

    classic: Any = attention_processor.AttnProcessor
    sdpa: Any = attention_processor.AttnProcessor2_0
    changed = False
    for _, model in _models(pipe, ATTENTION_MODELS):
        processors = getattr(model, "attn_processors", None) or {}
        if any(type(p) is classic for p in processors.values()):
            swapped = {k: sdpa() if type(p) is classic else p for k, p in processors.items()}
            model.set_attn_processor(swapped)
            changed = True
    return None if changed else "attention already uses scaled_dot_product_attention"


def _fuse_qkv(pipe: Any, settings: Settings, device: str) -> str | None:
    """Fuse where every processor is a plain one: fusing replaces them all (IP-Adapter's too)."""
    from diffusers.models.attention_processor import (
        AttnProcessor,
        AttnProcessor2_0,
        FusedAttnProcessor2_0,
    )

    fused, reasons = False, []
    for name, model in _models(pipe, ATTENTION_MODELS):
        kinds = {type(p) for p in (getattr(model, "attn_processors", None) or {}).values()}
        if not kinds or not hasattr(model, "fuse_qkv_projections"):
            reasons.append(f"{name} has no fusable attention")
        elif kinds == {FusedAttnProcessor2_0}:
            reasons.append(f"{name} is already fused")
        elif others := sorted(k.__name__ for k in kinds - {AttnProcessor, AttnProcessor2_0}):
            reasons.append(f"{name} uses attention processors {others} that fusing would replace")
        else:
            model.fuse_qkv_projections()
            fused = True
    return None if fused else "; ".join(reasons) or "no UNet, transformer or VAE"


def _channels_last(pipe: Any, settings: Settings, device: str) -> str | None:
    import torch

    changed, reasons = False, []
    for name, model in _models(pipe, CONV_MODELS):
        ranks = {p.dim() for p in model.parameters()}
        if 5 in ranks:
            reasons.append(f"{name} has 3-D convolutions")
        elif 4 in ranks:
            model.to(memory_format=torch.channels_last)
            changed = True
    return None if changed else "; ".join(reasons) or "no convolutional UNet or VAE"


def _vae_upcast(pipe: Any, settings: Settings, device: str) -> str | None:
    """Keep the VAE in float32 while the denoiser runs in half precision.

    Pipelines upcast an fp16 VAE whose config says `force_upcast` on every call and cast it back
    after (two copies of its weights per image). Here it stays float32, the flag is cleared, and
    each of its parts casts its half-precision inputs up on the way in.
    """
    import torch

    vae = _component(pipe, "vae")
    if vae is None:
        return "the pipeline has no VAE"
    dtype = next(vae.parameters()).dtype
    if dtype == torch.float32:
        return "the VAE is already float32"
    if settings.vae_upcast == "auto":
        if dtype != torch.float16:
            return f"{dtype} has float32's range: the VAE cannot overflow"
        if not getattr(vae.config, "force_upcast", False):
            return "the VAE's config says it is safe in float16"
    vae.to(dtype=torch.float32)
    if getattr(vae.config, "force_upcast", False):
        vae.register_to_config(force_upcast=False)
    for part in vae.children():
        part.register_forward_pre_hook(_inputs_to_float32, with_kwargs=True)
    return None


def _inputs_to_float32(
    _module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[tuple[Any, ...], dict[str, Any]]:
    import torch

    def up(value: Any) -> Any:
        if isinstance(value, torch.Tensor) and value.is_floating_point():
            return value.float()
        return value

    return tuple(up(a) for a in args), {k: up(v) for k, v in kwargs.items()}


def _compile(pipe: Any, settings: Settings, device: str) -> str | None:
    """Compile the denoiser in place; the first call at each new shape compiles (minutes)."""
    import torch

    denoiser = _component(pipe, "unet", "transformer")
    if denoiser is None:
        return "the pipeline has no UNet or transformer"
    # A graph that fails to compile then runs eagerly (logged by torch) instead of failing orders.
    torch._dynamo.config.suppress_errors = True
    denoiser.compile(mode=settings.compile_mode)
    return None
