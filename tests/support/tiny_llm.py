"""A tiny random-weight Qwen2 instruct model with its byte-level tokenizer, written to a folder
the `transformers` enhancer loads like a downloaded one."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import PreTrainedTokenizerBase, Qwen2Config, Qwen2ForCausalLM

from tests.support.qwen_tokenizer import make_qwen2_tokenizer


def tiny_qwen2_config(tokenizer: PreTrainedTokenizerBase, **extra: Any) -> Qwen2Config:
    """Two small layers over `tokenizer`'s vocabulary; `extra`: head-specific fields."""
    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        **extra,
    )


def build_tiny_llm(folder: Path, stops: bool = True) -> Path:
    """`stops` false: no end-of-text token, so it always writes max_new_tokens (a slow model)."""
    tokenizer = make_qwen2_tokenizer()
    eos = tokenizer.convert_tokens_to_ids("<|im_end|>") if stops else None
    config = tiny_qwen2_config(tokenizer, eos_token_id=eos)
    torch.manual_seed(0)
    Qwen2ForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
