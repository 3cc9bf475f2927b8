"""Every dialect this server speaks, by the name its orders record.

Each module of this package that defines `DIALECT` is one; native comes first, the others by
module name. Adding one: a module that builds a `Dialect`, the model names it accepts in the
catalog's `[dialects]` table, and its docs (docs/architecture.md walks through it).
"""

from __future__ import annotations

import importlib
import pkgutil

import easel.dialects
from easel.dialects import native
from easel.dialects.base import Dialect


def _discover() -> dict[str, Dialect]:
    found = {native.DIALECT.name: native.DIALECT}
    for info in sorted(pkgutil.iter_modules(easel.dialects.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"easel.dialects.{info.name}")
        dialect = getattr(module, "DIALECT", None)
        if isinstance(dialect, Dialect):
            found.setdefault(dialect.name, dialect)
    return found


DIALECTS: dict[str, Dialect] = _discover()


def dialect_of(name: str) -> Dialect:
    """An order's dialect; the native one for a name no longer served."""
    return DIALECTS.get(name, native.DIALECT)
