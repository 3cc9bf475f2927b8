"""`easel models ls|pull|verify|rm|du`: the catalog's weights on this machine.

Hugging Face repos go to the Hugging Face cache (HF_HOME / HF_HUB_CACHE) through
`huggingface_hub`, so HF_ENDPOINT (a mirror) and HF_TOKEN (gated repos) apply and an interrupted
pull resumes; local folders and files are the operator's to provide.
"""

from __future__ import annotations

import asyncio
import logging
import sys
from datetime import timedelta
from typing import Any

import click

from easel.backends import weights
from easel.catalog import Catalog, Model, load_catalog
from easel.config import get_settings
from easel.errors import ModelUnavailable


def _catalog() -> Catalog:
    return load_catalog(get_settings().catalog)


def _pick(catalog: Catalog, names: tuple[str, ...]) -> list[Model]:
    """Catalog models by id, style or alias; `all` (or nothing) is every model with weights."""
    if not names or names == ("all",):
        return [m for m in catalog.models.values() if weights.parts(m)]
    chosen: list[Model] = []
    for name in names:
        model = catalog.resolve(name)
        if model is None:
            known = ", ".join(sorted(catalog.models))
            raise click.BadParameter(f"no catalog model {name!r}; models: {known}")
        if model not in chosen:
            chosen.append(model)
    return chosen


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return f"{value:.1f} TB"


def _loaded_by() -> dict[str, list[str]] | None:
    """Model id -> live workers holding it loaded (None: the database did not answer)."""
    from easel.api.state import AppState
    from easel.clock import utcnow
    from easel.worker.presence import is_online, list_workers

    async def read() -> dict[str, list[str]]:
        settings = get_settings()
        state = AppState.build(settings)
        heartbeat = timedelta(seconds=settings.worker_heartbeat_seconds)
        try:
            async with state.db.transaction(readonly=True) as session:
                rows = await list_workers(session, utcnow() - 3 * heartbeat)
        finally:
            await state.db.dispose()
        held: dict[str, list[str]] = {}
        for row in rows:
            if is_online(row, utcnow(), heartbeat):
                for model_id in row.loaded_models:
                    held.setdefault(model_id, []).append(row.id)
        return held

    try:
        return asyncio.run(read())
    except Exception:
        return None


@click.group()
def models() -> None:
    """List, download, verify and remove the catalog's model weights."""
    for name in ("httpx", "httpx2", "huggingface_hub"):  # their request lines hide the bars
        logging.getLogger(name).setLevel(logging.WARNING)


@models.command("ls")
def models_ls() -> None:
    """Every catalog model: family, source, on disk or not, size, workers holding it loaded."""
    catalog = _catalog()
    held = _loaded_by()
    click.echo(f"{'model':<18}{'family':<13}{'on disk':<9}{'size':>9}  {'loaded by':<14}source")
    for model in catalog.models.values():
        parts = weights.parts(model)
        if not parts:
            state, total = "-", ""
        else:
            paths = [weights.on_disk(p) for p in parts]
            present = sum(p is not None for p in paths)
            state = "yes" if present == len(parts) else "partly" if present else "no"
            total = size(sum(weights.disk_bytes(p) for p in paths))
        loaded = "?" if held is None else ",".join(held.get(model.id, [])) or "-"
        source = " + ".join(p.ref for p in parts) or model.family
        click.echo(f"{model.id:<18}{model.family:<13}{state:<9}{total:>9}  {loaded:<14}{source}")
    missing = [m.id for m in catalog.models.values() if weights.parts(m) and not _ready(m)]
    if missing:
        click.echo(f"\nnot on disk: {', '.join(missing)}; `easel models pull MODEL` (or `all`)")


def startup_note() -> str:
    """What `easel serve` prints at start: the models ready here and how to pull the rest."""
    catalog = _catalog()
    local = [m for m in catalog.models.values() if weights.parts(m)]
    ready = [m.id for m in local if _ready(m)]
    missing = [m.id for m in local if not _ready(m)]
    note = f"Models on disk: {', '.join(ready) or 'none'}."
    if missing:
        note += (
            f"\nNot on disk yet: {', '.join(missing)}. A worker downloads one on first use, or "
            "pull it now: `easel models pull general` (`easel models ls` lists them all)."
        )
    return note


def _ready(model: Model) -> bool:
    return all(weights.on_disk(p) is not None for p in weights.parts(model))


class Bars:
    """A bar per file and one for the whole repo, drawn at the terminal's width."""

    def __init__(self, repo_id: str) -> None:
        self.repo_id = repo_id
        self.total: Any = None
        self.file: Any = None
        self.name = ""

    def __call__(self, name: str, done: int, file_size: int, all_done: int, all_size: int) -> None:
        from tqdm.auto import tqdm  # type: ignore[import-untyped]

        common: dict[str, Any] = {
            "unit": "B",
            "unit_scale": True,
            "unit_divisor": 1024,
            "file": sys.stderr,
            "dynamic_ncols": True,
        }
        if self.total is None:
            self.total = tqdm(desc=f"{self.repo_id} (all)", total=all_size, position=1, **common)
        if name != self.name:
            if self.file is not None:
                self.file.close()
            self.name = name
            self.file = tqdm(desc=name, total=file_size, position=0, leave=True, **common)
        self.file.update(done - self.file.n)
        self.total.update(all_done - self.total.n)

    def close(self) -> None:
        for bar in (self.file, self.total):
            if bar is not None:
                bar.close()


@models.command("pull")
@click.argument("names", nargs=-1, required=True)
def models_pull(names: tuple[str, ...]) -> None:
    """Download models (ids, styles or aliases; `all`: the whole catalog) into the cache."""
    failed = []
    for model in _pick(_catalog(), names):
        for part in weights.parts(model):
            if part.is_local:
                here = "present" if weights.on_disk(part) else "MISSING: provide it yourself"
                click.echo(f"{model.id}: {part.field} is the local path {part.ref} ({here})")
                continue
            click.echo(f"{model.id}: pulling {part.ref} ({part.field})")
            bars = Bars(part.ref)
            variant = model.variant if part.field == "source" else None
            try:
                path = weights.download(part.ref, variant, bars)
            except ModelUnavailable as exc:
                bars.close()
                click.echo(f"{model.id}: {exc.message}", err=True)
                failed.append(model.id)
                continue
            bars.close()
            click.echo(f"{model.id}: {part.ref} ready at {path} ({size(weights.disk_bytes(path))})")
    if failed:
        raise click.ClickException(f"not pulled: {', '.join(failed)}")


@models.command("verify")
@click.argument("names", nargs=-1)
def models_verify(names: tuple[str, ...]) -> None:
    """Check models (default: all on disk) against the hub: files, sizes, sha256."""
    bad = 0
    for model in _pick(_catalog(), names):
        for part in weights.parts(model):
            if weights.on_disk(part) is None:
                if names:
                    click.echo(f"{model.id}: {part.ref} is not on disk")
                    bad += 1
                continue
            if part.is_local:
                click.echo(f"{model.id}: {part.ref} is a local path (present; nothing to compare)")
                continue
            try:
                problems = list(weights.verify(part.ref, model.variant))
            except ModelUnavailable as exc:
                click.echo(f"{model.id}: cannot verify: {exc.message}")
                bad += 1
                continue
            for problem in problems:
                click.echo(f"{model.id}: {part.ref}/{problem.file}: {problem.why}")
            bad += len(problems)
            if not problems:
                click.echo(f"{model.id}: {part.ref} OK")
    if bad:
        raise click.ClickException(f"{bad} problem(s); `easel models pull` fetches them again")


@models.command("rm")
@click.argument("names", nargs=-1, required=True)
def models_rm(names: tuple[str, ...]) -> None:
    """Delete models' downloaded repos from the cache (local paths are left alone)."""
    catalog = _catalog()
    chosen = _pick(catalog, names)
    for model in chosen:
        for part in weights.parts(model):
            if part.is_local:
                click.echo(f"{model.id}: {part.ref} is a local path; left alone")
                continue
            users = [
                m.id
                for m in catalog.models.values()
                if m not in chosen and part in weights.parts(m)
            ]
            if users:
                click.echo(f"{model.id}: {part.ref} is also used by {', '.join(users)}; kept")
                continue
            click.echo(f"{model.id}: removed {part.ref} ({size(weights.remove(part.ref))})")


@models.command("du")
def models_du() -> None:
    """Disk used by each model's weights, and in all."""
    seen: dict[str, int] = {}
    for model in _catalog().models.values():
        parts = weights.parts(model)
        if not parts:
            continue
        used = 0
        for part in parts:
            if part.ref not in seen:
                seen[part.ref] = weights.disk_bytes(weights.on_disk(part))
            used += seen[part.ref]
        click.echo(f"{model.id:<18}{size(used):>10}")
    from huggingface_hub import constants

    click.echo(f"{'total':<18}{size(sum(seen.values())):>10}  (cache: {constants.HF_HUB_CACHE})")
