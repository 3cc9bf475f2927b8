"""The link between `easel serve` and its worker child: one Unix socket pair per child run.

The API side writes one byte (`WAKE`) after an order commits, so an idle embedded worker claims it
at once instead of at its next poll (SQLite has no LISTEN/NOTIFY; on PostgreSQL both wake it).
The worker writes `READY` once its loop runs; the supervisor counts the worker up from then until
the socket closes (the child died), which `/readyz` reports. Nothing here blocks: a wake-up that
finds the socket full or closed is dropped (the worker polls anyway).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
from dataclasses import dataclass

log = logging.getLogger(__name__)

WAKE = b"w"
READY = b"r"
LINK_FD_ENV = "EASEL_WORKER_LINK_FD"  # set by `easel serve` for its worker child


@dataclass
class ChildState:
    """A supervised child as its supervisor sees it (read by /readyz)."""

    command: str
    up: bool = False
    restarts: int = 0
    last_exit: str = ""  # "killed by signal 9 (SIGKILL)", "exited with code 1"


_lock = threading.Lock()
_links: dict[str, socket.socket] = {}  # command -> the API side of its current socket
_children: dict[str, ChildState] = {}


def supervised(command: str) -> ChildState:
    """The state of `command`'s child, registered by its supervisor in this process."""
    with _lock:
        return _children.setdefault(command, ChildState(command))


def children() -> list[ChildState]:
    with _lock:
        return list(_children.values())


def attach(command: str, sock: socket.socket | None) -> None:
    """The socket wake-ups for `command`'s child go to (None: the child is gone)."""
    with _lock:
        if sock is None:
            _links.pop(command, None)
        else:
            sock.setblocking(False)
            _links[command] = sock


def wake_local_workers() -> None:
    """Wake this process's worker child, if it has one (from any thread; never blocks)."""
    with _lock:
        links = list(_links.values())
    for sock in links:
        # Full: it has wake-ups pending anyway; closed: it died and is being restarted.
        with contextlib.suppress(OSError):
            sock.send(WAKE)


def child_link() -> socket.socket | None:
    """In a child of `easel serve`: its end of the link (None when it runs on its own)."""
    fd = os.environ.pop(LINK_FD_ENV, "")
    if not fd:
        return None
    try:
        sock = socket.socket(fileno=int(fd))
    except (OSError, ValueError):
        log.warning("no link to easel serve", extra={"action": "link_missing", "fd": fd})
        return None
    sock.setblocking(False)
    return sock
