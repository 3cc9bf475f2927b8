"""The client stands alone: `easel.client` and the user commands run with the server's packages
made unimportable, and a fresh virtual environment with a plain `pip install .` (no extras: no
torch, no diffusers) imports the client and runs `easel generate` against a real server."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from PIL import Image

from tests.support.live import Live

ROOT = Path(__file__).resolve().parents[2]
SERVER_SIDE = (
    "torch",
    "diffusers",
    "transformers",
    "sqlalchemy",
    "fastapi",
    "starlette",
    "uvicorn",
    "alembic",
    "asyncpg",
    "aiosqlite",
    "boto3",
    "numpy",
    "PIL",
    "limits",
    "redis",
    "prometheus_client",
)

# The server's packages with a database, a web framework or a GPU behind them (the heavy
# third-party modules above are unimportable in the test besides).
SERVER_PACKAGES = tuple(
    f"easel.{package}."
    for package in [
        *("api", "accounts", "db", "dialects", "media", "net"),
        *("orders", "services", "storage", "worker", "web"),
    ]
)


@pytest.mark.slow
def test_the_user_commands_run_without_the_servers_packages(live: Live, tmp_path: Path) -> None:
    _, key = live.account()
    out = tmp_path / "out"
    script = textwrap.dedent(
        f"""
        import sys
        for name in {SERVER_SIDE!r}:
            sys.modules[name] = None  # importing it raises ImportError
        import easel.client, easel.webhooks
        from easel.cli import main
        main(["generate", "a red fox", "--seed", "5", "-o", {str(out)!r},
              "--width", "256", "--height", "256", "--json"], standalone_mode=False)
        loaded = sorted(m + "." for m in sys.modules if m.startswith("easel."))
        print("LOADED", " ".join(loaded))
        """
    )
    env = os.environ | {
        "EASEL_BASE_URL": live.base_url,
        "EASEL_API_KEY": key,
        "EASEL_STATE_DIR": str(tmp_path / "state"),
    }
    run = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    loaded = run.stdout.split("LOADED ", 1)[1].split()
    assert [m for m in loaded if m.startswith(SERVER_PACKAGES)] == [], loaded
    assert [f.name.endswith("_0_seed5.png") for f in out.iterdir()] == [True]


@pytest.mark.slow
def test_a_plain_install_is_a_working_client(live: Live, tmp_path: Path) -> None:
    """`pip install .` with no extras, in a fresh environment: no torch, no diffusers, and
    `easel generate` works. The wheel is built from this checkout; dependencies come from the
    package index pip is configured with (its cache makes a second run quick)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    ignore = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    shutil.copytree(ROOT / "src", source / "src", ignore=ignore)
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check"]
    build = [*pip, "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)]
    step([*build, str(source)])
    step([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    [wheel] = wheels.glob("easel-*.whl")
    step([*pip, "--python", str(python), "install", "-q", str(wheel)])
    probe = (
        "import importlib.util as u; print([m for m in ('torch', 'diffusers') if u.find_spec(m)])"
    )
    assert step([str(python), "-c", probe]).strip() == "[]"  # none of the extras came along
    step([str(python), "-c", "import easel.client, easel.webhooks"])
    _, key = live.account()
    out = tmp_path / "out"
    env = os.environ | {
        "EASEL_BASE_URL": live.base_url,
        "EASEL_API_KEY": key,
        "EASEL_STATE_DIR": str(tmp_path / "state"),
    }
    args = ["generate", "a red fox", "--seed", "9", "-o", str(out), "--width", "256"]
    step([str(venv / "bin" / "easel"), *args, "--height", "256"], env=env)
    [image] = out.iterdir()
    assert image.name.endswith("_0_seed9.png")
    with Image.open(image) as png:
        assert png.size == (256, 256)


def step(args: list[str], env: dict[str, str] | None = None) -> str:
    run = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, f"{args[:4]} failed:\n{run.stdout}\n{run.stderr}"
    return run.stdout


def test_a_server_import_in_the_client_breaks_the_build(tmp_path: Path) -> None:
    """pyproject.toml's contract: easel.client imports nothing of the server."""
    from tests.unit.test_layers import lint

    shutil.copytree(ROOT / "src" / "easel", tmp_path / "easel")
    models = tmp_path / "easel" / "client" / "models.py"
    models.write_text(models.read_text() + "\nimport sqlalchemy  # the server's\n")
    result = lint(tmp_path)
    assert result.returncode != 0
    assert "easel.client.models -> sqlalchemy" in result.stdout
