"""The CLI's local journal: each submission's Idempotency-Key, body and output folder, written
to disk before the request is sent, then its order id once the server answered. After Ctrl-C, a
killed process or a dropped connection, `easel resume` sends the same key again (the server
answers with the order it already made: no second charge) or re-attaches to the order, and
finishes the downloads. One small JSON file per submission, replaced atomically; removed when
the order has ended and its files are written.

Where: EASEL_STATE_DIR, else $XDG_STATE_HOME/easel, else ~/.local/state/easel. The API key is
never written (resume takes it from EASEL_API_KEY or --api-key, as every command does), only a
short hash of it, so that resume refuses to send an entry with another account's key.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

SENDING = "sending"  # written, the request may or may not have reached the server
SUBMITTED = "submitted"  # the server answered with the order id
DETACHED = "detached"  # --no-wait: resumed only when named


def key_hash(api_key: str | None) -> str | None:
    """Enough of the key's SHA-256 to tell keys apart, not to recover one."""
    return hashlib.sha256(api_key.encode()).hexdigest()[:16] if api_key else None


def state_dir() -> Path:
    if os.environ.get("EASEL_STATE_DIR"):
        return Path(os.environ["EASEL_STATE_DIR"])
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "easel"


@dataclass
class Entry:
    key: str  # the Idempotency-Key
    base_url: str
    params: dict[str, Any]  # Easel.generate's keyword arguments
    out_dir: str
    created_at: float = field(default_factory=time.time)
    state: str = SENDING
    order_id: str | None = None
    key_hash: str | None = None  # which API key sent it (a hash: the key is never written)


class Journal:
    def __init__(self, directory: Path | None = None) -> None:
        self.directory = directory or state_dir() / "journal"

    def path(self, entry: Entry) -> Path:
        return self.directory / f"{entry.key}.json"

    def add(
        self,
        key: str,
        base_url: str,
        params: dict[str, Any],
        out_dir: str,
        api_key: str | None,
    ) -> Entry:
        entry = Entry(key, base_url, params, out_dir, key_hash=key_hash(api_key))
        self.save(entry)
        return entry

    def save(self, entry: Entry) -> None:
        """Write `entry` so that it is on disk, whole, before this returns."""
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(entry)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w") as f:
            json.dump(asdict(entry), f, indent=1)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fd = os.open(self.directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)

    def remove(self, entry: Entry) -> None:
        self.path(entry).unlink(missing_ok=True)

    def entries(self) -> list[Entry]:
        """Every entry, oldest first (a file that cannot be read is skipped)."""
        found = []
        for path in self.directory.glob("*.json"):
            try:
                found.append(Entry(**json.loads(path.read_text())))
            except (OSError, ValueError, TypeError):
                continue
        return sorted(found, key=lambda e: e.created_at)

    def to_resume(self, refs: tuple[str, ...] = ()) -> list[Entry]:
        """The entries named by order id or key; with none named, every one not detached."""
        if refs:
            return [e for e in self.entries() if e.order_id in refs or e.key in refs]
        return [e for e in self.entries() if e.state != DETACHED]
