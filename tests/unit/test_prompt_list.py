"""The catalog's safety list sees through width variants, format characters, case, line breaks
and missing spaces; ordinary prompts pass."""

from __future__ import annotations

import pytest

from easel.catalog import load_catalog
from easel.errors import ContentPolicy
from easel.safety.prompts import refuse_listed

SAFETY = load_catalog().safety


@pytest.mark.parametrize(
    "prompt",
    [
        "ｃｈｉｌｄ porn",
        "chi\u00adld porn",
        "nude k\u200bid",
        "child\nporn",
        "childporn",
        "CHILD   PORN",
        "a kid,\nthen\nnaked",
    ],
)
def test_evasions_are_refused(prompt: str) -> None:
    with pytest.raises(ContentPolicy):
        refuse_listed(SAFETY, prompt)


def test_ordinary_prompts_pass() -> None:
    for prompt in ("children playing in a park", "a childlike wonder, pornographic-free art"):
        refuse_listed(SAFETY, prompt)
