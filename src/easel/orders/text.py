"""Text a client sends must be text: valid Unicode, no control characters but tab and line
breaks. PostgreSQL cannot store NUL, and a lone UTF-16 surrogate cannot be encoded at all."""

from __future__ import annotations

import re

from easel.errors import InvalidRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")  # all but \t, \n and \r


def check_text(value: str, field: str) -> str:
    """`value`, or InvalidRequest naming `field` and the first offending character."""
    bad = _SURROGATE.search(value)
    if bad is not None:
        raise InvalidRequest(
            f"{field} is not valid Unicode (a lone surrogate \\u{ord(bad.group()):04x} at "
            f"character {bad.start()}); send text encoded as UTF-8",
            param=field,
        )
    bad = _CONTROL.search(value)
    if bad is not None:
        raise InvalidRequest(
            f"{field} contains the control character \\u{ord(bad.group()):04x} at character "
            f"{bad.start()}; remove it (only tab and line breaks are allowed)",
            param=field,
        )
    return value
