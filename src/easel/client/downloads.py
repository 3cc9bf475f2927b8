"""Where an order's outputs are written: `<order id>_<index>_seed<seed>.<ext>`, each written to
a `.part` file and renamed when complete, so a file that exists is whole (and is not fetched
again by a later `download` or `easel resume`)."""

from __future__ import annotations

import mimetypes
import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from easel.client.models import Output

EXTENSIONS = {"image/jpeg": ".jpg", "image/png": ".png", "image/webp": ".webp"}


@dataclass(frozen=True)
class DownloadedFile:
    """One output on disk."""

    path: Path
    index: int
    seed: int
    width: int
    height: int
    content_type: str
    url: str
    fetched: bool  # False: it was already there


def extension(output: Output) -> str:
    ext = EXTENSIONS.get(output.content_type) or mimetypes.guess_extension(output.content_type)
    return ext or Path(urlsplit(output.url).path).suffix or ".bin"


def output_path(directory: Path, order_id: str, index: int, output: Output) -> Path:
    return directory / f"{order_id}_{index}_seed{output.seed}{extension(output)}"


def part_path(path: Path) -> Path:
    return path.with_name(path.name + ".part")


def finish(part: Path, path: Path) -> None:
    """The complete `.part` file becomes `path` (flushed first: a crash leaves no torn file)."""
    with open(part, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(part, path)


def downloaded(path: Path, index: int, output: Output, fetched: bool) -> DownloadedFile:
    return DownloadedFile(
        path=path,
        index=index,
        seed=output.seed,
        width=output.width,
        height=output.height,
        content_type=output.content_type,
        url=output.url,
        fetched=fetched,
    )
