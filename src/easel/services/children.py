"""`easel serve`'s children (`easel worker`, `easel services`): started beside the API,
restarted whenever they die (with a capped backoff, never given up on), stopped last. On Linux a
child also gets SIGTERM if `easel serve` itself dies, so none is left behind. Each child run gets
a socket pair (`easel.wakeup`): the API wakes its worker through it, the worker says when it is
ready, and the socket closing tells the supervisor at once that the child died."""

from __future__ import annotations

import ctypes
import logging
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable

from easel import metrics, wakeup

log = logging.getLogger(__name__)

# A child that ran this long before dying starts the backoff afresh.
STABLE_SECONDS = 30.0
WATCH_SECONDS = 0.5  # how often the watch looks at the child besides its socket


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
    def __init__(
        self,
        command: str,
        stop_timeout: float,
        *,
        restart_first: float = 1.0,
        restart_max: float = 60.0,
    ) -> None:
        """`command`: the `easel` subcommand the child runs. A child that dies is started again
        after `restart_first` seconds, doubling while it keeps dying within
        STABLE_SECONDS of its start, at most `restart_max`; never given up on."""
        self.command = command
        self.stop_timeout = stop_timeout
        self.restart_first = restart_first
        self.restart_max = restart_max
        self.state = wakeup.supervised(command)
        self._stop = threading.Event()
        self._proc: subprocess.Popen[bytes] | None = None
        self._thread = threading.Thread(target=self._run, name=f"{command}-supervisor", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _spawn(self, link: socket.socket) -> subprocess.Popen[bytes]:
        env = os.environ.copy() | {wakeup.LINK_FD_ENV: str(link.fileno())}
        return subprocess.Popen(
            [sys.executable, "-m", "easel", self.command],
            env=env,
            pass_fds=(link.fileno(),),
            preexec_fn=_die_with(os.getpid()),  # only prctl and getppid before exec
        )

    def backoff(self, failures: int) -> float:
        """Seconds before the restart after `failures` quick deaths in a row (1, 2, 4, … max)."""
        return float(min(self.restart_max, self.restart_first * 2 ** max(0, failures - 1)))

    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            started = time.monotonic()
            ours, theirs = socket.socketpair()
            try:
                self._proc = self._spawn(theirs)
            except OSError:
                log.exception("could not start the child", extra={"action": "child_spawn_error"})
                ours.close()
                theirs.close()
                failures += 1
                self._stop.wait(self.backoff(failures))
                continue
            theirs.close()
            # A child that does not say READY (services) is up while it runs.
            self.state.up = self.command != "worker"
            wakeup.attach(self.command, ours)
            try:
                self._watch(self._proc, ours)
                code = self._proc.wait()
            finally:
                wakeup.attach(self.command, None)
                self.state.up = False
                ours.close()
            metrics.CHILD_UP.labels(self.command).set(0)
            metrics.process_ended(self._proc.pid)
            if self._stop.is_set():
                return
            failures = failures + 1 if time.monotonic() - started < STABLE_SECONDS else 1
            delay = self.backoff(failures)
            self.state.restarts += 1
            self.state.last_exit = describe_exit(code)
            metrics.CHILD_RESTARTS.labels(self.command).inc()
            log.error(
                f"{self.command} child {self.state.last_exit}; restarting it in {delay:g} s "
                f"(restart {self.state.restarts}, {failures} quick death(s) in a row)",
                extra={
                    "action": "child_restart",
                    "command": self.command,
                    "pid": self._proc.pid,
                    "exit_code": code,
                    "delay_s": delay,
                    "restarts": self.state.restarts,
                },
            )
            self._stop.wait(delay)

    def _watch(self, proc: subprocess.Popen[bytes], link: socket.socket) -> None:
        """Until the child exits: mark it up when it says READY. Its death closes the socket,
        which ends the wait at once."""
        link_open = True
        while proc.poll() is None:
            if not link_open:
                time.sleep(WATCH_SECONDS)
                continue
            readable, _, _ = select.select([link], [], [], WATCH_SECONDS)
            if not readable:
                continue
            try:
                data = link.recv(64)
            except BlockingIOError:
                continue
            except OSError:
                data = b""
            if not data:  # the child closed its end: it is exiting
                link_open = False
                continue
            if wakeup.READY in data and not self.state.up:
                self.state.up = True
                metrics.CHILD_UP.labels(self.command).set(1)
                log.info(
                    f"{self.command} child ready",
                    extra={"action": "child_ready", "command": self.command, "pid": proc.pid},
                )

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


def describe_exit(code: int) -> str:
    """How a child ended, in words an operator can act on."""
    if code >= 0:
        return f"exited with code {code}"
    number = -code
    try:
        name = signal.Signals(number).name
    except ValueError:
        name = "unknown signal"
    words = f"was killed by signal {number} ({name})"
    if number == signal.SIGKILL:
        words += ", possibly the OOM killer (see `dmesg` or `journalctl -k`)"
    return words
