"""Prompts against the catalog's `[safety]` list, before anything is charged or queued. Both
sides are normalised first (NFKC, format characters such as soft hyphens and zero-width spaces
dropped, casefolded, whitespace collapsed), and a term's words match with any whitespace between
them or none ("child porn", "childporn", "child\nporn")."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

from easel.catalog.loader import SafetyList
from easel.errors import ContentPolicy


@lru_cache(maxsize=8)
def _compiled(safety: SafetyList) -> tuple[re.Pattern[str], ...]:
    terms = [
        re.compile(rf"(?<!\w){term_pattern(t)}(?!\w)", re.IGNORECASE)
        for t in (*safety.terms, *safety.extra_terms)
        if t.strip()
    ]
    patterns = [
        re.compile(p, re.IGNORECASE | re.DOTALL) for p in (*safety.patterns, *safety.extra_patterns)
    ]
    return (*terms, *patterns)


def normalized(text: str) -> str:
    """NFKC, format characters (category Cf) dropped, casefolded, whitespace runs as one space."""
    text = unicodedata.normalize("NFKC", text)
    text = "".join(c for c in text if unicodedata.category(c) != "Cf")
    return " ".join(text.casefold().split())


def term_pattern(term: str) -> str:
    """A listed term's words in order, with any whitespace (or none) between them."""
    return r"\s*".join(re.escape(word) for word in normalized(term).split())


def listed(safety: SafetyList, text: str) -> bool:
    """Whether `text` matches the list."""
    text = normalized(text)
    return any(pattern.search(text) for pattern in _compiled(safety))


def refuse_listed(safety: SafetyList, text: str, param: str = "prompt") -> None:
    """Raise ContentPolicy (400, code content_policy) when `text` matches the list."""
    if listed(safety, text):
        raise ContentPolicy(
            f"the {param} is refused by this server's content policy (it matches the "
            "operator's list of refused words); change the wording. Nothing was charged",
            param=param,
        )
