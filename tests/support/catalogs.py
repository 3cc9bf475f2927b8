"""Operator catalogs that point Easel's SDXL styles at a local tiny pipeline folder."""

from __future__ import annotations

from pathlib import Path

from easel.config import Settings

SDXL_MODELS = ("sdxl-general", "sdxl-realistic", "sdxl-anime", "sdxl-guofeng", "sdxl-turbo")


def tiny_catalog(
    path: Path, model_dir: Path | str, steps: int = 2, extra: str = "", side: int | None = None
) -> Path:
    """`side`: every SDXL model's default width and height (aspect ratios scale from it)."""
    size = f"width = {side}\nheight = {side}\n" if side else ""
    text = "".join(
        f'[models.{m}]\nsource = "{model_dir}"\nsteps = {steps}\n{size}' for m in SDXL_MODELS
    )
    path.write_text(text + extra)
    return path


def animatediff_table(adapter: Path | str, base: Path | str, steps: int = 2) -> str:
    """`[models.animatediff]` on local adapter and base folders, for `tiny_catalog(extra=...)`."""
    return f'[models.animatediff]\nsource = "{adapter}"\nbase = "{base}"\nsteps = {steps}\n'


def wan_table(source: Path | str, side: int = 256) -> str:
    """`[models.wan-ti2v-5b]` on a local tiny Wan folder: 1 s clips of 5 frames (4 fps)."""
    return (
        f'[models.wan-ti2v-5b]\nsource = "{source}"\nsteps = 2\nwidth = {side}\n'
        f"height = {side}\nfps = 4\nseconds = 1\nmax_frames = 9\n"
    )


def with_caps(settings: Settings, tmp_path: Path, cap: int) -> Settings:
    """`settings` with every plan's running cap set to `cap`."""
    path = tmp_path / "caps.toml"
    path.write_text(
        "".join(f"[plans.{p}]\nmax_running = {cap}\n" for p in ("free", "standard", "pro", "mega"))
    )
    return settings.model_copy(update={"catalog": path})
