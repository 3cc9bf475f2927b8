"""A byte-level Qwen2Tokenizer written from local files, shared by the tiny Z-Image and Qwen-Image.

No merges: every UTF-8 byte is one token, so any prompt (Chinese included) tokenizes without
an unknown token. The chat template is the ChatML shape the Qwen models use.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from transformers import Qwen2Tokenizer

from tests.support.tiny_models import _byte_symbols

SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def qwen_vocab() -> dict[str, int]:
    tokens = [*_byte_symbols(), *SPECIAL_TOKENS]
    return {token: index for index, token in enumerate(tokens)}


def make_qwen2_tokenizer() -> Qwen2Tokenizer:
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        (folder / "vocab.json").write_text(json.dumps(qwen_vocab()), encoding="utf-8")
        (folder / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
        tokenizer: Qwen2Tokenizer = Qwen2Tokenizer.from_pretrained(
            folder, chat_template=CHAT_TEMPLATE
        )
    tokenizer.add_special_tokens({"additional_special_tokens": list(SPECIAL_TOKENS[1:])})
    return tokenizer
