"""Model weights on disk: where a catalog model's parts are, whether a worker can serve them, and
downloading, verifying and removing Hugging Face repos (`easel models`, first loads).

A part is a catalog field naming weights (`source`, `base`, `config`): a local folder or file, or
a Hugging Face repo id kept in the Hugging Face cache (HF_HOME / HF_HUB_CACHE). Downloads go
through `huggingface_hub`, so HF_ENDPOINT (a mirror) and HF_TOKEN (gated repos) apply, and an
interrupted file resumes where it stopped. Only the files diffusers loads are fetched: the
component folders named in `model_index.json` (safetensors rather than .bin, the catalog's
`variant` where the repo has it), not the single-file checkpoints many repos also carry.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from easel.catalog import Model
from easel.errors import ModelUnavailable

WEIGHT_FIELDS = ("source", "base", "config")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".ckpt", ".pt", ".pth", ".gguf")

# After each chunk: (file name, its bytes done, its size, all files' bytes done, their size).
Progress = Callable[[str, int, int, int, int], None]


@dataclass(frozen=True)
class Part:
    field: str  # source | base | config
    ref: str  # local path or repo id

    @property
    def is_local(self) -> bool:
        return is_local(self.ref)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    size: int
    sha256: str | None  # LFS files: the hub lists their sha256


def is_local(ref: str) -> bool:
    return ref.startswith(("/", "./", "../", "~")) or Path(ref).expanduser().exists()


def parts(model: Model) -> list[Part]:
    """The model's weight parts (a remote provider's model has none)."""
    found = []
    for field in WEIGHT_FIELDS:
        ref = getattr(model, field, None)
        if ref:
            found.append(Part(field, str(ref)))
    return found


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "") not in ("", "0", "false")


def cached_snapshot(repo_id: str) -> Path | None:
    """The newest downloaded snapshot folder of `repo_id` in the Hugging Face cache."""
    from huggingface_hub import constants

    folder = Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))
    ref = folder / "refs" / "main"
    if ref.is_file():
        snapshot = folder / "snapshots" / ref.read_text().strip()
        if snapshot.is_dir():
            return snapshot
    snapshots = sorted((folder / "snapshots").glob("*"), key=lambda p: p.stat().st_mtime)
    return snapshots[-1] if snapshots else None


def repo_folder(repo_id: str) -> Path:
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE) / ("models--" + repo_id.replace("/", "--"))


def on_disk(part: Part) -> Path | None:
    """Where the part's files are on this machine (None: not here)."""
    if part.is_local:
        path = Path(part.ref).expanduser()
        return path if path.exists() else None
    return cached_snapshot(part.ref)


def disk_bytes(path: Path | None) -> int:
    """Bytes under `path` (symlinks into the cache's blobs are followed once each)."""
    if path is None:
        return 0
    if path.is_file():
        return path.stat().st_size
    seen: set[Path] = set()
    total = 0
    for file in path.rglob("*"):
        real = file.resolve()
        if real.is_file() and real not in seen:
            seen.add(real)
            total += real.stat().st_size
    return total


def servable(model: Model) -> bool:
    """Whether a worker here can run `model` without help: every part on disk, or a repo id
    that may still be downloaded (not HF_HUB_OFFLINE). Family checks are the caller's."""
    return all(on_disk(p) is not None or (not p.is_local and not offline()) for p in parts(model))


def _api() -> Any:
    from huggingface_hub import HfApi

    return HfApi()


def remote_files(repo_id: str, variant: str | None = None) -> tuple[str, list[RemoteFile]]:
    """The repo's commit and the files diffusers would load from it, with sizes and hashes."""
    try:
        info = _api().model_info(repo_id, files_metadata=True)
    except Exception as exc:
        raise ModelUnavailable(explain(repo_id, exc)) from exc
    files = [
        RemoteFile(s.rfilename, int(s.size or 0), s.lfs.sha256 if s.lfs else None)
        for s in info.siblings or []
    ]
    return str(info.sha), select_files(files, variant)


def select_files(files: list[RemoteFile], variant: str | None) -> list[RemoteFile]:
    """What `from_pretrained` reads: with a `model_index.json`, it and the component folders;
    one weight format per folder (safetensors first), the variant's files where present."""
    names = {f.name for f in files}
    if "model_index.json" in names:
        folders = {f.name.split("/", 1)[0] for f in files if "/" in f.name}
        files = [f for f in files if "/" not in f.name or f.name.split("/", 1)[0] in folders]
        files = [f for f in files if "/" in f.name or not f.name.endswith(WEIGHT_SUFFIXES)]
    chosen: list[RemoteFile] = []
    by_folder: dict[str, list[RemoteFile]] = {}
    for f in files:
        by_folder.setdefault(f.name.rsplit("/", 1)[0] if "/" in f.name else "", []).append(f)
    for group in by_folder.values():
        weights = [f for f in group if f.name.endswith(WEIGHT_SUFFIXES)]
        others = [f for f in group if f not in weights]
        if weights:
            with_variant = [f for f in weights if variant and f".{variant}." in f.name]
            plain = [f for f in weights if not any(f".{v}." in f.name for v in ("fp16", "bf16"))]
            pool = with_variant or plain or weights
            safetensors = [f for f in pool if f.name.endswith(".safetensors")]
            weights = safetensors or pool
        chosen.extend(others + weights)
    return sorted(chosen, key=lambda f: f.name)


def download(repo_id: str, variant: str | None = None, progress: Progress | None = None) -> Path:
    """Download the repo's loadable files into the cache (resuming partial ones); its folder."""
    from huggingface_hub import hf_hub_download

    commit, files = remote_files(repo_id, variant)
    total = sum(f.size for f in files)
    finished = 0

    def report(name: str, done: int, size: int) -> None:
        if progress is not None:
            progress(name, done, size, finished + done, total)

    current = files[0] if files else RemoteFile("", 0, None)
    tqdm_class = _reporting_tqdm(lambda done: report(current.name, done, current.size))
    try:
        for f in files:
            current = f
            report(f.name, 0, f.size)
            hf_hub_download(repo_id, f.name, revision=commit, tqdm_class=tqdm_class)
            finished += f.size
            if progress is not None:
                progress(f.name, f.size, f.size, finished, total)
    except ModelUnavailable:
        raise
    except Exception as exc:
        raise ModelUnavailable(explain(repo_id, exc)) from exc
    snapshot = repo_folder(repo_id) / "snapshots" / commit
    (repo_folder(repo_id) / "refs").mkdir(parents=True, exist_ok=True)
    (repo_folder(repo_id) / "refs" / "main").write_text(commit)
    return snapshot


def _reporting_tqdm(progress: Callable[[int], None]) -> Any:
    """A tqdm class that tells `progress` about each chunk and draws nothing."""
    from tqdm.auto import tqdm  # type: ignore[import-untyped]

    class Reporting(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = False
            kwargs["file"] = open(os.devnull, "w")  # noqa: SIM115 - closed in close()
            super().__init__(*args, **kwargs)
            progress(int(self.n))

        def update(self, n: float | None = 1) -> bool | None:
            done: bool | None = super().update(n)
            progress(int(self.n))
            return done

        def close(self) -> None:
            file = self.fp
            super().close()
            file.close()

    return Reporting


def explain(repo_id: str, exc: BaseException) -> str:
    """Why `repo_id` could not be fetched, in words an operator can act on."""
    name = type(exc).__name__
    detail = (str(exc).splitlines() or [name])[0][:300]
    if "GatedRepo" in name or "401" in detail or "403" in detail:
        why = "the repo is gated or private: accept its terms on the hub and set HF_TOKEN"
    elif "RepositoryNotFound" in name or "404" in detail:
        why = "no such repo on the hub (or it is private: set HF_TOKEN)"
    elif isinstance(exc, OSError) and getattr(exc, "errno", None) == 28:
        why = "the disk is full (free space under HF_HOME, or point HF_HOME elsewhere)"
    elif offline():
        why = "HF_HUB_OFFLINE is set and it is not in the local cache"
    else:
        why = "the hub (HF_ENDPOINT) could not be reached"
    return f"{repo_id}: {why} ({name}: {detail})"


@dataclass(frozen=True)
class Problem:
    file: str
    why: str


def verify(repo_id: str, variant: str | None = None) -> Iterator[Problem]:
    """Compare the cached snapshot with the hub's listing: every file present, of its size,
    and of its sha256 where the hub lists one."""
    commit, files = remote_files(repo_id, variant)
    snapshot = repo_folder(repo_id) / "snapshots" / commit
    for f in files:
        path = snapshot / f.name
        if not path.exists():
            yield Problem(f.name, "missing")
            continue
        size = path.stat().st_size
        if f.size and size != f.size:
            yield Problem(f.name, f"{size} bytes, the hub lists {f.size}")
        elif f.sha256 and sha256_of(path) != f.sha256:
            yield Problem(f.name, "sha256 differs from the hub's")


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def remove(repo_id: str) -> int:
    """Delete the repo from the cache; the bytes freed."""
    folder = repo_folder(repo_id)
    freed = disk_bytes(folder / "blobs") if folder.exists() else 0
    shutil.rmtree(folder, ignore_errors=True)
    return freed
