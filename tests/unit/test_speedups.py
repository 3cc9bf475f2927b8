"""GPU speedups on the tiny SDXL pipeline: same images, each switch alone, graceful refusals."""

from __future__ import annotations

import copy
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import AutoencoderKL, StableDiffusionXLPipeline
from diffusers.models.attention_processor import AttnProcessor2_0

from easel.backends.speedups import apply_speedups, warm_up
from easel.config import Settings

SIZE = 64
ALL_OFF: dict[str, Any] = {
    "compile": False,
    "channels_last": False,
    "fuse_qkv": False,
    "sdpa": False,
    "vae_upcast": "off",
    "vae_fp16_fix": "",
}


def settings(**on: Any) -> Settings:
    return Settings(**{**ALL_OFF, **on})


def load(folder: Path, dtype: torch.dtype = torch.float32) -> Any:
    pipe = StableDiffusionXLPipeline.from_pretrained(folder, dtype=dtype)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def images(pipe: Any, seeds: tuple[int, ...] = (7,), output_type: str = "np") -> Any:
    with torch.inference_mode():
        out = pipe(
            prompt=["a red kite over dunes"] * len(seeds),
            negative_prompt=["blurry"] * len(seeds),
            width=SIZE,
            height=SIZE,
            num_inference_steps=2,
            guidance_scale=5.0,
            generator=[torch.Generator("cpu").manual_seed(s) for s in seeds],
            output_type=output_type,
        )
    return out.images


def fingerprint(pipe: Any) -> dict[str, Any]:
    """Each speedup's footprint on the pipeline, one entry per speedup."""
    unet, vae = pipe.unet, pipe.vae
    modules = {"unet": unet, "vae": vae}
    return {
        "fuse_qkv": sorted(
            f"{name}.{key}"
            for name, model in modules.items()
            for key in model.state_dict()
            if ".to_qkv." in key or ".to_kv." in key
        ),
        "channels_last": [
            name
            for name, model in modules.items()
            for p in model.parameters()
            if p.dim() == 4 and not p.is_contiguous()
        ],
        "sdpa": sorted(
            {
                f"{name}:{type(p).__name__}"
                for name, m in modules.items()
                for p in m.attn_processors.values()
            }
        ),
        "vae_upcast": (
            str(next(vae.parameters()).dtype),
            vae.config.force_upcast,
            sum(len(part._forward_pre_hooks) for part in vae.children()),
        ),
        "compile": getattr(unet, "_compiled_call_impl", None) is not None,
        "weights": {
            name: {k: v.clone() for k, v in model.state_dict().items()}
            for name, model in modules.items()
        },
    }


def same_weights(a: dict[str, Any], b: dict[str, Any]) -> bool:
    return a.keys() == b.keys() and all(
        a[m].keys() == b[m].keys() and all(torch.equal(a[m][k], b[m][k]) for k in a[m]) for m in a
    )


def test_fused_qkv_and_channels_last_give_the_plain_pipelines_images(tiny_sdxl: Path) -> None:
    plain = images(load(tiny_sdxl), seeds=(7, 8))
    pipe = load(tiny_sdxl)
    done = apply_speedups(pipe, settings(fuse_qkv=True, channels_last=True, sdpa=True), "cpu")

    assert done.applied == ["fuse_qkv", "channels_last"]
    assert done.skipped == {"sdpa": "attention already uses scaled_dot_product_attention"}
    after = fingerprint(pipe)
    assert any(".attn1.to_qkv." in key for key in after["fuse_qkv"])  # self-attention: q, k, v
    assert any(".attn2.to_kv." in key for key in after["fuse_qkv"])  # cross-attention: k, v
    assert set(after["channels_last"]) == {"unet", "vae"}
    fast = images(pipe, seeds=(7, 8))
    assert fast.shape == plain.shape
    np.testing.assert_allclose(fast, plain, atol=1e-4)


def test_everything_off_leaves_the_pipeline_untouched(tiny_sdxl: Path) -> None:
    pipe = load(tiny_sdxl)
    before = fingerprint(pipe)
    done = apply_speedups(pipe, settings(), "cpu")
    assert (done.applied, done.skipped) == ([], {})
    after = fingerprint(pipe)
    assert same_weights(before.pop("weights"), after.pop("weights"))
    assert before == after


@pytest.mark.parametrize("speedup", ["fuse_qkv", "channels_last", "sdpa", "compile"])
# Importing torch._dynamo touches a deprecated torch.jit API.
@pytest.mark.filterwarnings("ignore:`torch.jit.script_method` is deprecated:DeprecationWarning")
def test_each_switch_changes_only_its_own_part(tiny_sdxl: Path, speedup: str) -> None:
    pipe = load(tiny_sdxl)
    if speedup == "sdpa":  # the tiny pipeline loads with SDPA already: start from classic attention
        pipe.unet.set_default_attn_processor()
    before = fingerprint(pipe)
    with torch._dynamo.config.patch(suppress_errors=False):  # restore what compile sets
        done = apply_speedups(pipe, settings(**{speedup: True}), "cpu")
    assert (done.applied, done.skipped) == ([speedup], {})
    after = fingerprint(pipe)
    assert before[speedup] != after[speedup]
    also = {"sdpa"} if speedup == "fuse_qkv" else set()  # fusing swaps in fused processors
    for part in before.keys() - {speedup, "weights", *also}:
        assert before[part] == after[part], part
    if speedup != "fuse_qkv":
        assert same_weights(before["weights"], after["weights"])
    if speedup == "sdpa":
        assert {type(p) for p in pipe.unet.attn_processors.values()} == {AttnProcessor2_0}


def test_vae_upcast_keeps_a_float16_vae_in_float32(tiny_sdxl: Path) -> None:
    pipe = load(tiny_sdxl, torch.float16)
    reference = copy.deepcopy(pipe.vae).float()
    skipped = apply_speedups(pipe, settings(vae_upcast="auto"), "cpu").skipped
    assert skipped == {"vae_upcast": "the VAE's config says it is safe in float16"}

    pipe.vae.register_to_config(force_upcast=True)  # what SDXL's own VAE says
    assert apply_speedups(pipe, settings(vae_upcast="auto"), "cpu").applied == ["vae_upcast"]
    assert {p.dtype for p in pipe.vae.parameters()} == {torch.float32}
    assert {p.dtype for p in pipe.unet.parameters()} == {torch.float16}
    assert pipe.vae.config.force_upcast is False  # the pipeline no longer casts it per call

    latents = images(pipe, output_type="latent")
    assert latents.dtype == torch.float16
    scaled = latents / pipe.vae.config.scaling_factor
    with torch.inference_mode():
        decoded = pipe.vae.decode(scaled).sample
        expected = reference.decode(scaled.float()).sample
    assert decoded.dtype == torch.float32
    torch.testing.assert_close(decoded, expected)
    assert np.isfinite(images(pipe)).all()


def test_vae_upcast_auto_leaves_bfloat16_alone(tiny_sdxl: Path) -> None:
    pipe = load(tiny_sdxl, torch.bfloat16)
    pipe.vae.register_to_config(force_upcast=True)
    done = apply_speedups(pipe, settings(vae_upcast="auto"), "cpu")
    assert "float32's range" in done.skipped["vae_upcast"]
    assert apply_speedups(pipe, settings(vae_upcast="always"), "cpu").applied == ["vae_upcast"]
    assert next(pipe.vae.parameters()).dtype == torch.float32


def test_fp16_fix_vae_weights_load_into_the_same_module(tiny_sdxl: Path, tmp_path: Path) -> None:
    pipe = load(tiny_sdxl)
    torch.manual_seed(1)
    fixed = AutoencoderKL.from_config({**pipe.vae.config, "force_upcast": False})
    fixed.save_pretrained(tmp_path / "vae-fix")
    vae = pipe.vae
    vae.register_to_config(force_upcast=True)

    done = apply_speedups(pipe, settings(vae_fp16_fix=str(tmp_path / "vae-fix")), "cpu")
    assert done.applied == ["vae_fp16_fix"]
    assert pipe.vae is vae  # in place: an image-to-image twin made by from_pipe shares it
    assert vae.config.force_upcast is False
    for key, value in fixed.state_dict().items():
        assert torch.equal(vae.state_dict()[key], value), key


def test_unsupported_speedups_are_skipped_and_the_pipeline_still_works(
    tiny_sdxl: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    class CountingProcessor(AttnProcessor2_0):  # stands for IP-Adapter-style processors
        calls = 0

        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            CountingProcessor.calls += 1
            return super().__call__(*args, **kwargs)

    pipe = load(tiny_sdxl)
    pipe.unet.set_attn_processor(CountingProcessor())
    pipe.vae.set_attn_processor(CountingProcessor())
    other = AutoencoderKL(
        block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2,
        up_block_types=("UpDecoderBlock2D",) * 2,
        norm_num_groups=8,
    )
    other.save_pretrained(tmp_path / "other-vae")
    before = fingerprint(pipe)

    with caplog.at_level(logging.WARNING, logger="easel.backends.speedups"):
        missing = apply_speedups(pipe, settings(vae_fp16_fix=str(tmp_path / "nowhere")), "cpu")
    assert missing.skipped["vae_fp16_fix"].startswith("failed: ")
    assert "speedup not applied" in caplog.text
    wrong = apply_speedups(pipe, settings(vae_fp16_fix=str(tmp_path / "other-vae")), "cpu")
    assert "made for another VAE (block_out_channels" in wrong.skipped["vae_fp16_fix"]
    fuse = apply_speedups(pipe, settings(fuse_qkv=True), "cpu")
    assert fuse.applied == []
    assert "unet uses attention processors ['CountingProcessor']" in fuse.skipped["fuse_qkv"]

    after = fingerprint(pipe)
    assert same_weights(before.pop("weights"), after.pop("weights"))
    assert before == after
    CountingProcessor.calls = 0
    assert np.isfinite(images(pipe)).all()
    assert CountingProcessor.calls > 0


def test_warm_up_runs_the_shapes_asked_for(tiny_sdxl: Path) -> None:
    pipe = load(tiny_sdxl)
    first = images(pipe)
    shapes: list[tuple[int, ...]] = []
    pipe.unet.register_forward_pre_hook(lambda _m, args: shapes.append(tuple(args[0].shape)))
    seconds = warm_up(pipe, width=SIZE, height=2 * SIZE, batch=3, steps=1, guidance_scale=5.0)
    assert seconds > 0
    assert shapes == [(6, 4, 2 * SIZE // 8, SIZE // 8)]  # 3 images, guided: batch 6
    np.testing.assert_array_equal(images(pipe), first)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_every_speedup_on_cuda_matches_plain_bfloat16(tiny_sdxl: Path) -> None:
    plain = load(tiny_sdxl, torch.bfloat16).to("cuda")
    expected = images(plain, seeds=(7, 8))
    pipe = load(tiny_sdxl).to("cuda")  # float32: half_precision casts it
    on = {"compile": True, "compile_mode": "default", "channels_last": True, "fuse_qkv": True}
    with torch._dynamo.config.patch(suppress_errors=False):  # a compile failure must fail here
        done = apply_speedups(pipe, settings(**on, sdpa=True), "cuda")
        assert set(done.applied) >= {"half_precision", "fuse_qkv", "channels_last", "compile"}
        warm_up(pipe, width=SIZE, height=SIZE, batch=2, guidance_scale=5.0)
        fast = images(pipe, seeds=(7, 8))
    # bfloat16 rounds differently in fused and compiled kernels; broken output differs by ~0.2.
    assert float(np.abs(fast - expected).mean()) < 0.01
