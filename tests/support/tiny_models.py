"""Tiny, random-weight Stable Diffusion XL pipeline built fully offline for tests.

`build_tiny_sdxl(path)` writes a `save_pretrained()` folder that
`StableDiffusionXLPipeline.from_pretrained(path)` loads with HF_HUB_OFFLINE=1.
Sizes follow diffusers' own tiny SDXL test components, except the VAE, which
keeps four blocks so the latent scale stays 8x (fast at real image sizes).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any

import torch
from diffusers import (
    AutoencoderKL,
    EulerDiscreteScheduler,
    StableDiffusionXLPipeline,
    UNet2DConditionModel,
)
from safetensors.torch import load_file, save_file
from transformers import (
    CLIPTextConfig,
    CLIPTextModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
)

from tests.support.tiny_folders import save_atomically

BOS_TOKEN = "<|startoftext|>"
EOS_TOKEN = "<|endoftext|>"
MODEL_MAX_LENGTH = 77
TEXT_HIDDEN_SIZE = 32
TEXT_PROJECTION_DIM = 32
ADDITION_TIME_EMBED_DIM = 8


def _byte_symbols() -> list[str]:
    """GPT-2's byte-to-unicode table: one printable symbol per byte value."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1)]
    printable += list(range(ord("®"), ord("ÿ") + 1))
    codepoints = {byte: byte for byte in printable}
    extra = 0
    for byte in range(256):
        if byte not in codepoints:
            codepoints[byte] = 256 + extra
            extra += 1
    return [chr(codepoints[byte]) for byte in range(256)]


def _clip_vocab() -> dict[str, int]:
    symbols = _byte_symbols()
    tokens = symbols + [s + "</w>" for s in symbols] + [BOS_TOKEN, EOS_TOKEN]
    return {token: index for index, token in enumerate(tokens)}


def _make_tokenizer(vocab: dict[str, int]) -> CLIPTokenizer:
    """Write vocab.json / merges.txt to a scratch folder and load a CLIPTokenizer from it."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer: CLIPTokenizer = CLIPTokenizer.from_pretrained(
            folder, model_max_length=MODEL_MAX_LENGTH
        )
    return tokenizer


def _text_config(vocab: dict[str, int]) -> CLIPTextConfig:
    eos_id = vocab[EOS_TOKEN]
    return CLIPTextConfig(
        vocab_size=len(vocab),
        bos_token_id=vocab[BOS_TOKEN],
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        hidden_size=TEXT_HIDDEN_SIZE,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=5,
        max_position_embeddings=MODEL_MAX_LENGTH,
        layer_norm_eps=1e-5,
        hidden_act="gelu",
        projection_dim=TEXT_PROJECTION_DIM,
    )


def _make_unet() -> UNet2DConditionModel:
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=32,
        in_channels=4,
        out_channels=4,
        block_out_channels=(2, 4),
        layers_per_block=2,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=(2, 4),
        transformer_layers_per_block=(1, 2),
        use_linear_projection=True,
        # Both encoders' hidden states are concatenated.
        cross_attention_dim=2 * TEXT_HIDDEN_SIZE,
        addition_embed_type="text_time",
        addition_time_embed_dim=ADDITION_TIME_EMBED_DIM,
        # Six micro-conditioning time ids plus the pooled text embedding.
        projection_class_embeddings_input_dim=6 * ADDITION_TIME_EMBED_DIM + TEXT_PROJECTION_DIM,
        norm_num_groups=1,
    )


def make_tiny_vae(latent_channels: int = 4, **config: Any) -> AutoencoderKL:
    """Four blocks -> three downsamples -> 8x latent scale, like the real VAEs, so tests run at
    real image sizes quickly. `config`: further AutoencoderKL settings (scaling, upcast)."""
    torch.manual_seed(0)
    return AutoencoderKL(
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16, 32, 32),
        down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4,
        layers_per_block=1,
        latent_channels=latent_channels,
        norm_num_groups=8,
        sample_size=256,
        **config,
    )


def _make_scheduler() -> EulerDiscreteScheduler:
    return EulerDiscreteScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        steps_offset=1,
        timestep_spacing="leading",
    )


def make_tiny_sdxl_pipeline() -> StableDiffusionXLPipeline:
    """Build the tiny pipeline in memory (deterministic: every component is seeded)."""
    vocab = _clip_vocab()
    torch.manual_seed(0)
    text_encoder = CLIPTextModel(_text_config(vocab))
    torch.manual_seed(0)
    text_encoder_2 = CLIPTextModelWithProjection(_text_config(vocab))
    return StableDiffusionXLPipeline(
        # Weights are float32 already; upcasting only makes img2img log a warning.
        vae=make_tiny_vae(force_upcast=False),
        text_encoder=text_encoder,
        text_encoder_2=text_encoder_2,
        tokenizer=_make_tokenizer(vocab),
        tokenizer_2=_make_tokenizer(vocab),
        unet=_make_unet(),
        scheduler=_make_scheduler(),
        image_encoder=None,
        feature_extractor=None,
    )


def build_tiny_sdxl(path: Path) -> Path:
    """Write the tiny SDXL pipeline folder at `path` (no-op if already built); return `path`."""
    return save_atomically(make_tiny_sdxl_pipeline, Path(path))


# --- The same weights as ONE checkpoint in the original Stability (SGM / "ldm") SDXL layout ---

_UNET_FIXED = {
    "conv_in": "input_blocks.0.0",
    "time_embedding.linear_1": "time_embed.0",
    "time_embedding.linear_2": "time_embed.2",
    "add_embedding.linear_1": "label_emb.0.0",
    "add_embedding.linear_2": "label_emb.0.2",
    "conv_norm_out": "out.0",
    "conv_out": "out.2",
}
_UNET_RESNET = {
    "norm1": "in_layers.0",
    "conv1": "in_layers.2",
    "norm2": "out_layers.0",
    "conv2": "out_layers.3",
    "time_emb_proj": "emb_layers.1",
    "conv_shortcut": "skip_connection",
}
_VAE_ATTENTION = {
    "group_norm": "norm",
    "to_q": "q",
    "to_k": "k",
    "to_v": "v",
    "to_out.0": "proj_out",
}
_OPEN_CLIP_FIXED = {
    "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
    "text_model.embeddings.position_embedding.weight": "positional_embedding",
    "text_model.final_layer_norm.weight": "ln_final.weight",
    "text_model.final_layer_norm.bias": "ln_final.bias",
}
_OPEN_CLIP_LAYER = {
    "layer_norm1": "ln_1",
    "layer_norm2": "ln_2",
    "mlp.fc1": "mlp.c_fc",
    "mlp.fc2": "mlp.c_proj",
    "self_attn.out_proj": "attn.out_proj",
}


def _sgm_unet_key(key: str, per_block: int, attention_up_blocks: set[int]) -> str:
    """`down_blocks.1.resnets.0.norm1.weight` -> `input_blocks.4.0.in_layers.0.weight`."""
    stem, leaf = key.rsplit(".", 1)
    if stem in _UNET_FIXED:
        return f"{_UNET_FIXED[stem]}.{leaf}"
    parts = key.split(".")
    if parts[0] == "mid_block":  # resnet, attention, resnet
        kind, index, rest = parts[1], int(parts[2]), parts[3:]
        prefix = f"middle_block.{2 * index if kind == 'resnets' else 1}"
    else:
        block, kind, index, rest = int(parts[1]), parts[2], int(parts[3]), parts[4:]
        first = block * (per_block + 1)  # SGM numbers every layer of every block in one list
        if kind == "downsamplers":
            prefix, rest = f"input_blocks.{first + per_block + 1}.0.op", rest[1:]  # drop "conv"
        elif kind == "upsamplers":
            slot = 2 if block in attention_up_blocks else 1
            prefix = f"output_blocks.{first + per_block}.{slot}"
        elif parts[0] == "down_blocks":
            prefix = f"input_blocks.{first + 1 + index}.{int(kind == 'attentions')}"
        else:
            prefix = f"output_blocks.{first + index}.{int(kind == 'attentions')}"
    if kind == "resnets":
        rest = [_UNET_RESNET.get(rest[0], rest[0]), *rest[1:]]
    return ".".join([prefix, *rest])


def _sgm_vae_key(key: str, levels: int) -> str:
    """`decoder.up_blocks.0.resnets.1.conv1.weight` -> `decoder.up.3.block.1.conv1.weight`."""
    coder, part, *rest = key.replace("conv_norm_out", "norm_out").split(".")
    if part in ("down_blocks", "up_blocks"):
        block, kind, index, *rest = rest
        level = int(block) if part == "down_blocks" else levels - 1 - int(block)  # up is reversed
        where = f"{coder}.{part.removesuffix('_blocks')}.{level}"
        if kind == "resnets":
            prefix = f"{where}.block.{index}"
        else:  # downsamplers.0.conv -> downsample.conv
            prefix = f"{where}.{kind.removesuffix('rs')}"
    elif part == "mid_block":
        kind, index, *rest = rest
        if kind == "attentions":
            name, leaf = ".".join(rest).rsplit(".", 1)
            return f"{coder}.mid.attn_1.{_VAE_ATTENTION[name]}.{leaf}"
        prefix = f"{coder}.mid.block_{int(index) + 1}"
    else:  # conv_in, norm_out, conv_out, quant_conv, post_quant_conv
        prefix = f"{coder}.{part}"
    rest = ["nin_shortcut" if name == "conv_shortcut" else name for name in rest]
    return ".".join([prefix, *rest])


def _sgm_open_clip(weights: dict[str, torch.Tensor], layers: int) -> dict[str, torch.Tensor]:
    """CLIPTextModelWithProjection weights -> OpenCLIP names (fused q/k/v, x @ text_projection)."""
    out = {"text_projection": weights["text_projection.weight"].T.contiguous()}
    for key, name in _OPEN_CLIP_FIXED.items():
        out[name] = weights[key]
    for layer in range(layers):
        ours, theirs = f"text_model.encoder.layers.{layer}", f"transformer.resblocks.{layer}"
        for leaf in ("weight", "bias"):
            qkv = [weights[f"{ours}.self_attn.{p}_proj.{leaf}"] for p in "qkv"]
            out[f"{theirs}.attn.in_proj_{leaf}"] = torch.cat(qkv)
            for name, sgm_name in _OPEN_CLIP_LAYER.items():
                out[f"{theirs}.{sgm_name}.{leaf}"] = weights[f"{ours}.{name}.{leaf}"]
    return out


def build_tiny_sdxl_single_file(folder: Path, out: Path) -> Path:
    """Write the pipeline saved in `folder` as ONE SGM-layout .safetensors at `out`; return `out`.

    The layout is that of Stability's `sd_xl_base_1.0.safetensors` (UNet under
    `model.diffusion_model.`, VAE under `first_stage_model.`, the CLIP-L-style encoder under
    `conditioner.embedders.0.transformer.`, the OpenCLIP-style one under
    `conditioner.embedders.1.model.`), so `from_single_file(out, config=folder)` must convert it
    back. Scheduler and tokenizers are not weights: they come from `config`.
    """
    folder, out = Path(folder), Path(out)

    def component(name: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        config = json.loads((folder / name / "config.json").read_text(encoding="utf-8"))
        files = sorted((folder / name).glob("*.safetensors"))
        return config, {k: v for f in files for k, v in load_file(f).items()}

    checkpoint: dict[str, torch.Tensor] = {}
    unet_config, unet = component("unet")
    per_block = unet_config["layers_per_block"]
    attention_up = {i for i, t in enumerate(unet_config["up_block_types"]) if "CrossAttn" in t}
    for key, tensor in unet.items():
        checkpoint["model.diffusion_model." + _sgm_unet_key(key, per_block, attention_up)] = tensor
    vae_config, vae = component("vae")
    for key, tensor in vae.items():
        sgm_key = _sgm_vae_key(key, len(vae_config["up_block_types"]))
        if ".attn_1." in sgm_key and tensor.ndim == 2:
            tensor = tensor[:, :, None, None]  # SGM's VAE attention uses 1x1 convolutions
        checkpoint["first_stage_model." + sgm_key] = tensor
    _, clip = component("text_encoder")
    for key, tensor in clip.items():  # newer transformers save CLIPTextModel without `text_model.`
        name = key if key.startswith("text_model.") else "text_model." + key
        checkpoint["conditioner.embedders.0.transformer." + name] = tensor
    clip2_config, clip2 = component("text_encoder_2")
    for key, tensor in _sgm_open_clip(clip2, clip2_config["num_hidden_layers"]).items():
        checkpoint["conditioner.embedders.1.model." + key] = tensor
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in checkpoint.items()}, out)
    return out


TEXT_2_HIDDEN_SIZE = 48
TEXT_2_LAYERS = 10


def build_tiny_sdxl_wide_text_encoder_2(path: Path) -> Path:
    """`build_tiny_sdxl`, but the second text encoder is wider and deeper; return `path`.

    Real SDXL's encoders are 768 and 1280 wide, and diffusers' `from_single_file` tells them
    apart by width only: with two 32-wide encoders it loads the first encoder's weights into
    `text_encoder_2` and leaves its `text_projection` on the meta device. Ten layers give the
    single file the key diffusers looks for to recognise SDXL base
    (`conditioner.embedders.1.model.transformer.resblocks.9.…`).
    """
    path = Path(path)
    if (path / "model_index.json").exists():
        return path
    pipe: Any = make_tiny_sdxl_pipeline()
    config = _text_config(_clip_vocab())
    config.hidden_size = TEXT_2_HIDDEN_SIZE
    config.num_hidden_layers = TEXT_2_LAYERS
    torch.manual_seed(1)
    text_encoder_2 = CLIPTextModelWithProjection(config)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(
        {**pipe.unet.config, "cross_attention_dim": TEXT_HIDDEN_SIZE + TEXT_2_HIDDEN_SIZE}
    )
    components = {**pipe.components, "text_encoder_2": text_encoder_2, "unet": unet}
    StableDiffusionXLPipeline(**components).save_pretrained(path)
    return path
