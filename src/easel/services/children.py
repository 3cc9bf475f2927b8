"""`easel serve`'s children (`easel worker`, `easel services`): started beside the API,
restarted if they die, stopped last. On Linux a child also gets SIGTERM if `easel serve` itself
dies, so none is left behind."""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from easel import metrics

log = logging.getLogger(__name__)

QUICK_EXIT_SECONDS = 30.0
MAX_QUICK_EXITS = 5


PR_SET_PDEATHSIG = 1
# Looked up once here: the child between fork and exec must not load libraries.
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None


def _die_with(parent: int) -> Callable[[], None]:
    def arm() -> None:
        """In the child, before exec: SIGTERM when `parent` exits (Linux), or exit at once
        if it already has."""
        if _PRCTL is not None:
            _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
            if os.getppid() != parent:
                os._exit(1)

    return arm


class ChildSupervisor:
    def __init__(self, command: str, stop_timeout: float) -> None:
        """`command`: the `easel` subcommand the child runs."""
        self.command = command
        self.stop_timeout = stop_timeout
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{command}-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            [sys.executable, "-m", "easel", self.command],
            env=os.environ.copy(),
            preexec_fn=_die_with(os.getpid()),  # only prctl and getppid before exec
        )

    def _run(self) -> None:
        quick_exits = 0
        while not self._stop.is_set():
            started = time.monotonic()
            self._proc = self._spawn()
            code = self._proc.wait()
            metrics.process_ended(self._proc.pid)
            if self._stop.is_set():
                return
            quick = time.monotonic() - started < QUICK_EXIT_SECONDS
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= MAX_QUICK_EXITS:
                log.error(
                    "child keeps exiting; not restarting it (see its log above)",
                    extra={"action": "child_gave_up", "command": self.command, "exit_code": code},
                )
                return
            delay = min(30.0, 2.0**quick_exits)
            log.error(
                "child exited; restarting",
                extra={
                    "action": "child_restart",
                    "command": self.command,
                    "exit_code": code,
                    "delay_s": delay,
                },
            )
            self._stop.wait(delay)

    def stop(self) -> None:
        """SIGTERM the child (a worker finishes its batch), wait, then kill if it overstays."""
        self._stop.set()
        proc = self._proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=self.stop_timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(timeout=5)
