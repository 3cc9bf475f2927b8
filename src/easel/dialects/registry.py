"""Every dialect this server speaks, by the name its orders record. Adding one: a module in
this package that builds a `Dialect`, one line here, its model names in the catalog's
`[dialects]` table, and its docs (docs/architecture.md walks through it)."""

from __future__ import annotations

from easel.dialects import kie, kirin, native, openai_images, tasks
from easel.dialects.base import Dialect

DIALECTS: dict[str, Dialect] = {
    d.name: d
    for d in (native.DIALECT, kie.DIALECT, tasks.DIALECT, kirin.DIALECT, openai_images.DIALECT)
}


def dialect_of(name: str) -> Dialect:
    """An order's dialect; the native one for a name no longer served."""
    return DIALECTS.get(name, native.DIALECT)
