"""A tiny random-weight Qwen2 sequence classifier (labels `safe`, `unsafe`) with its byte-level
tokenizer, written to a folder that EASEL_PROMPT_CLASSIFIER loads like a downloaded model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Qwen2Config,
    Qwen2ForSequenceClassification,
)

from tests.support.qwen_tokenizer import make_qwen2_tokenizer

LABELS = ("safe", "unsafe")


def build_tiny_classifier(folder: Path) -> Path:
    tokenizer = make_qwen2_tokenizer()
    config = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=1,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.convert_tokens_to_ids("<|endoftext|>"),
        id2label=dict(enumerate(LABELS)),
        label2id={label: i for i, label in enumerate(LABELS)},
    )
    torch.manual_seed(0)
    Qwen2ForSequenceClassification(config).save_pretrained(folder)
    tokenizer.model_max_length = 512
    tokenizer.save_pretrained(folder)
    return folder


def label_scores(folder: Path, text: str) -> dict[str, float]:
    """Each label's probability for `text` (a short, lower-case prompt), straight from the
    model: what a test picks its refused label and threshold by."""
    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForSequenceClassification.from_pretrained(folder).eval()
    with torch.inference_mode():
        logits = model(**tokenizer(text, return_tensors="pt")).logits[0]
    return {LABELS[i]: float(p) for i, p in enumerate(logits.softmax(-1))}
