"""`easel serve`'s worker child: started beside the API, restarted if it dies, stopped last."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time

log = logging.getLogger(__name__)

QUICK_EXIT_SECONDS = 30.0
MAX_QUICK_EXITS = 5


class WorkerSupervisor:
    def __init__(self, stop_timeout: float) -> None:
        self.stop_timeout = stop_timeout
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name="worker-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen([sys.executable, "-m", "easel", "worker"], env=os.environ.copy())

    def _run(self) -> None:
        quick_exits = 0
        while not self._stop.is_set():
            started = time.monotonic()
            self._proc = self._spawn()
            code = self._proc.wait()
            if self._stop.is_set():
                return
            quick = time.monotonic() - started < QUICK_EXIT_SECONDS
            quick_exits = quick_exits + 1 if quick else 0
            if quick_exits >= MAX_QUICK_EXITS:
                log.error(
                    "worker keeps exiting; not restarting it (see its log above)",
                    extra={"action": "worker_gave_up", "exit_code": code},
                )
                return
            delay = min(30.0, 2.0**quick_exits)
            log.error(
                "worker exited; restarting",
                extra={"action": "worker_restart", "exit_code": code, "delay_s": delay},
            )
            self._stop.wait(delay)

    def stop(self) -> None:
        """SIGTERM the worker (it finishes its order), wait, then kill if it overstays."""
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
