"""A tiny random-weight Qwen2 sequence classifier (labels `safe`, `unsafe`) with its byte-level
tokenizer, written to a folder that EASEL_PROMPT_CLASSIFIER loads like a downloaded model."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import (
    AutoModelForSequenceClassification,
    AutoTokenizer,
    Qwen2ForSequenceClassification,
)

from tests.support.qwen_tokenizer import make_qwen2_tokenizer
from tests.support.tiny_llm import tiny_qwen2_config

LABELS = ("safe", "unsafe")


def build_tiny_classifier(folder: Path) -> Path:
    tokenizer = make_qwen2_tokenizer()
    config = tiny_qwen2_config(
        tokenizer,
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
