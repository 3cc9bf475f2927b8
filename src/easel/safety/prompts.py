"""Prompts against the catalog's `[safety]` list, before anything is charged or queued."""

from __future__ import annotations

import re
from functools import lru_cache

from easel.catalog.loader import SafetyList
from easel.errors import ContentPolicy


@lru_cache(maxsize=8)
def _compiled(safety: SafetyList) -> tuple[re.Pattern[str], ...]:
    terms = [
        re.compile(rf"(?<!\w){re.escape(t)}(?!\w)", re.IGNORECASE)
        for t in (*safety.terms, *safety.extra_terms)
        if t.strip()
    ]
    patterns = [re.compile(p, re.IGNORECASE) for p in (*safety.patterns, *safety.extra_patterns)]
    return (*terms, *patterns)


def check_prompt(safety: SafetyList, text: str, param: str = "prompt") -> None:
    """Raise ContentPolicy (400, code content_policy) when `text` matches the list."""
    for pattern in _compiled(safety):
        if pattern.search(text):
            raise ContentPolicy(
                f"the {param} is refused by this server's content policy (it matches the "
                "operator's list of refused words); change the wording. Nothing was charged",
                param=param,
            )
