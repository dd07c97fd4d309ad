"""Keeps one tritonserver serving: starts it, watches its stubs, and when it exits or crashes
reaps every process it left and either restarts it (bounded, with back-off) or exits non-zero so that
an orchestrator restarts the pod. SIGTERM/SIGINT shut it down cleanly."""

from __future__ import annotations

import logging
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Callable, Optional

from .process import ServerExited, TritonServer
from .watchdog import StubWatchdog

log = logging.getLogger("kontext-serve")
KILL_MARGIN_S = 15.0  # after a stop request, a server still running at its exit timeout plus this is killed


@dataclass(frozen=True)
class RestartPolicy:
    """What to do when tritonserver ends without being asked to."""

    on_exit: str = "restart"  # "restart" (local default) or "exit" (containers: the orchestrator restarts)
    max_restarts: int = 5  # within window_s; past that, give up and exit non-zero
    window_s: float = 600.0
    backoff_s: tuple[float, ...] = (1, 2, 4, 8, 16, 30)

    def __post_init__(self):
        if self.on_exit not in ("restart", "exit"):
            raise ValueError(f"on_exit must be 'restart' or 'exit', got {self.on_exit!r}")


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        return f"was killed by {signal.Signals(-returncode).name}"
    return f"exited with code {returncode}"


class Supervisor:
    def __init__(self, server: TritonServer, policy: RestartPolicy = RestartPolicy(), ready_timeout_s: float = 900.0,
                 watchdog: bool = True, on_ready: Optional[Callable[[TritonServer], None]] = None):
        self.server = server
        self.policy = policy
        self.ready_timeout_s = ready_timeout_s
        self.use_watchdog = watchdog
        self.on_ready = on_ready
        self.watchdog: Optional[StubWatchdog] = None
        self.restarts: list[float] = []  # monotonic times of restarts
        self._stop_requested: Optional[float] = None  # monotonic time of the request; a plain value: signal-safe

    @property
    def stopping(self) -> bool:
        return self._stop_requested is not None

    def request_stop(self, *_signal) -> None:
        """Signal-safe: no locks taken, nothing waited for. run() sees the server exit and returns."""
        if self._stop_requested is None:
            self._stop_requested = time.monotonic()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.server.terminate()

    def run(self) -> int:
        """Serves until stopped (0) or until the server cannot be kept up (non-zero)."""
        ever_ready = False
        while True:
            returncode = self._serve_once()
            if returncode is None:  # never became ready
                if self.stopping:
                    return 0
                if not ever_ready:
                    return 1  # a start-up error (bad setting, missing weights) is not fixed by restarting
                reason = "did not become ready"
            else:
                ever_ready = True
                if self.stopping:
                    if returncode != 0:
                        log.error("tritonserver %s while shutting down (requests still running at the exit "
                                  "timeout end like this)", describe_exit(returncode))
                    return 0 if returncode == 0 else 1
                reason = describe_exit(returncode)
            if not self._may_restart(reason):
                return 0 if self.stopping else 1

    def _serve_once(self) -> Optional[int]:
        """Starts the server, serves until it exits; its return code, or None if it never got ready."""
        try:
            self.server.start(self.ready_timeout_s)
        except (ServerExited, TimeoutError) as exc:
            if not self.stopping:
                log.error("%s", exc)
            return None
        if self.on_ready is not None:
            self.on_ready(self.server)
        if self.use_watchdog:
            self.watchdog = StubWatchdog(self.server)
            self.watchdog.start()
        if self.stopping:  # a signal arrived during start-up
            self.server.terminate()
        returncode = self._wait_for_exit()
        if self.watchdog is not None:
            self.watchdog.stop()
        self.server.reap()  # stubs a crashed server orphaned would otherwise live on
        return returncode

    def _wait_for_exit(self) -> int:
        """Waits for the server; once a stop was asked for, at most its exit timeout plus a margin."""
        while True:
            try:
                return self.server.process.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                pass
            if self.stopping and time.monotonic() - self._stop_requested > self.server.exit_timeout_s + KILL_MARGIN_S:
                log.error("tritonserver did not exit within its exit timeout; killing it")
                self.server.reap()

    def _may_restart(self, reason: str) -> bool:
        if self.policy.on_exit == "exit":
            log.error("tritonserver %s; exiting so that the orchestrator restarts the service", reason)
            return False
        now = time.monotonic()
        recent = [t for t in self.restarts if now - t < self.policy.window_s]
        if len(recent) >= self.policy.max_restarts:
            log.error("tritonserver %s; %d restarts within %.0f s already, giving up", reason, len(recent),
                      self.policy.window_s)
            return False
        delay = self.policy.backoff_s[min(len(recent), len(self.policy.backoff_s) - 1)]
        log.error("tritonserver %s; restarting in %.0f s (restart %d of at most %d per %.0f s)", reason, delay,
                  len(recent) + 1, self.policy.max_restarts, self.policy.window_s)
        resume = time.monotonic() + delay
        while time.monotonic() < resume:  # short sleeps: a stop request ends the wait
            if self.stopping:
                return False
            time.sleep(0.1)
        self.restarts = [*recent, time.monotonic()]
        return True


def install_signal_handlers(supervisor: Supervisor) -> None:
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, supervisor.request_stop)


