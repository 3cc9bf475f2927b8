"""Every example of docs/sdk.md (```python) and docs/cli.md (```bash) runs as written against a
real server, in a fresh folder, with EASEL_BASE_URL and EASEL_API_KEY set; the webhook examples
get a real delivery saved as body.json and its headers. ```console and ```text blocks are
shell sessions and sample output, not run."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from easel.client import Easel
from tests.support.live import Live
from tests.support.receiver import webhook_receiver

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
RUN = {"sdk.md": "python", "cli.md": "bash"}


def examples() -> list[tuple[str, int, str]]:
    found = []
    for doc, language in RUN.items():
        blocks = re.findall(r"^```(\w+)\n(.*?)^```", (DOCS / doc).read_text(), re.M | re.S)
        found += [(doc, i, code) for i, (lang, code) in enumerate(blocks) if lang == language]
    return found


EXAMPLES = examples()


def test_the_docs_have_their_examples() -> None:
    counts = {doc: sum(d == doc for d, _, _ in EXAMPLES) for doc in RUN}
    assert counts["sdk.md"] >= 8 and counts["cli.md"] >= 5, counts


@pytest.fixture(scope="module")
def user(live: Live, tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """The environment of a user with a real webhook delivery in body.json."""
    _, key = live.account("standard", topup=100)
    folder = tmp_path_factory.mktemp("docs")
    with Easel(live.base_url, key) as client, webhook_receiver() as hooks:
        order = client.generate(
            style="general", prompt="a hook", webhook_url=hooks.url, width=256, height=256
        )
        order.wait(timeout=120)
        [call] = hooks.wait_for(1)
        secret = client.account().webhook_secret
    (folder / "body.json").write_bytes(call.raw)
    path = f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"
    return os.environ | {
        "EASEL_BASE_URL": live.base_url,
        "EASEL_API_KEY": key,
        "EASEL_STATE_DIR": str(folder / "state"),
        "EASEL_WEBHOOK_SECRET": secret,
        "WEBHOOK_ID": call.headers["webhook-id"],
        "WEBHOOK_TIMESTAMP": call.headers["webhook-timestamp"],
        "WEBHOOK_SIGNATURE": call.headers["webhook-signature"],
        "PATH": path,
        "DOCS_FOLDER": str(folder),
    }


@pytest.mark.parametrize(
    ("doc", "index", "code"), EXAMPLES, ids=[f"{d}-{i}" for d, i, _ in EXAMPLES]
)
def test_example_runs(user: dict[str, str], doc: str, index: int, code: str) -> None:
    args = (
        [sys.executable, "-c", code]
        if RUN[doc] == "python"
        else ["bash", "-euo", "pipefail", "-c", code]
    )
    run = subprocess.run(
        args, cwd=user["DOCS_FOLDER"], env=user, capture_output=True, text=True, timeout=180
    )
    assert run.returncode == 0, f"{doc} example {index}:\n{code}\n{run.stdout}\n{run.stderr}"
