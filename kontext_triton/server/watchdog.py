"""Reloads a model whose Python backend stub died, and only such a model.

Triton 2.51 keeps reporting a model ready after its stub process died, fails every request with
"Stub process ... is not healthy", and never restarts the stub (triton-inference-server/server#8604;
fixed in 2.65). Every second this thread compares each model's stub processes with those it saw last.
A stub that vanished is a death only if, after a grace period, no new stub took its place (a load
through the repository API, by an operator or Model Analyzer, replaces stubs) and Triton still lists the
model READY (an unload leaves it UNAVAILABLE). A dead stub's model is reloaded with the configuration
it was serving, so an operator's override survives the reload.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .process import TritonServer, http_ok

log = logging.getLogger("kontext-serve")


def stub_processes(repository: Path, server_pid: Optional[int] = None) -> dict[str, set[int]]:
    """Live Python backend stub pids per model of `repository` (of the tritonserver `server_pid` only,
    when given), read from /proc. A stub's command line is: stub, <repository>/<model>/<version>/model.py,
    shared-memory region, sizes, its tritonserver's pid, ..."""
    repository = repository.resolve()
    found: dict[str, set[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            argv = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if len(argv) > 5 and argv[0].endswith(b"triton_python_backend_stub"):
            model_py = Path(argv[1].decode(errors="replace"))
            if model_py.parent.parent.parent != repository:
                continue
            if server_pid is not None and argv[5] != str(server_pid).encode():
                continue
            found.setdefault(model_py.parent.parent.name, set()).add(int(entry.name))
    return found


def process_start_ticks(pid: int) -> Optional[int]:
    """When the process started, in clock ticks since boot (/proc/<pid>/stat, field 22); None if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the fields after the command name start at field 3


class StubWatchdog(threading.Thread):
    def __init__(self, server: TritonServer, interval_s: float = 1.0, grace_s: float = 3.0):
        super().__init__(name="stub-watchdog", daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.grace_s = grace_s
        self.reloads: list[str] = []
        self._stopping = threading.Event()

    def stubs(self) -> dict[str, set[int]]:
        return stub_processes(Path(self.server.model_repository), self.server.process.pid)

    def run(self) -> None:
        # stub pid -> when its process started: a stub that vanished was replaced if a stub of its model
        # started after it (by the clock, not by when a poll first saw it: a load that began before or
        # within the first poll would otherwise look as old as the stub it replaced)
        started: dict[int, int] = {}
        known = self.stubs()
        self._note_starts(set().union(*known.values()), started)
        vanished: dict[str, set[int]] = {}  # stubs gone and not yet judged, per model
        while not self._stopping.wait(self.interval_s):
            if not self.server.running():
                return  # the server itself is gone (its stubs went with it): the supervisor's business
            try:
                current = self.stubs()
                self._note_starts(set().union(*current.values()), started)
                for model, pids in known.items():
                    vanished.setdefault(model, set()).update(pids - current.get(model, set()))
                for model, pids in list(vanished.items()):
                    if pids:
                        verdict = self._judge(model, max(started.get(pid, 0) for pid in pids), started)
                        if verdict is None:
                            continue  # the server did not answer: judge again next time
                        del vanished[model]
                        if verdict:
                            log.warning("a stub of model %s died; reloading it", model)
                            self.reload(model)
                known = current
            except Exception:  # a watchdog that stops watching must say so, then keep going
                log.exception("stub watchdog: check failed")

    @staticmethod
    def _note_starts(pids: set[int], started: dict[int, int]) -> None:
        for pid in pids - started.keys():
            ticks = process_start_ticks(pid)
            if ticks is not None:
                started[pid] = ticks

    def _judge(self, model: str, vanished_started: int, started: dict[int, int]) -> Optional[bool]:
        """A stub of `model` vanished: True for a death, False for a reload or an unload, None if unknown."""
        if self._stopping.wait(self.grace_s) or not self.server.running():
            return False
        if not http_ok(f"{self._base}/health/live", 5):
            return None
        live = self.stubs().get(model, set())
        self._note_starts(live, started)
        if any(started.get(pid, 0) > vanished_started for pid in live):
            return False  # a newer stub took its place: a load through the repository API
        return self._state(model) == "READY"

    def _state(self, model: str) -> Optional[str]:
        index = self._post("repository/index", timeout_s=10)
        return next((entry.get("state") for entry in index if entry.get("name") == model), None)

    def reload(self, model: str) -> None:
        """Unload, then load with the configuration it was serving (a plain load of an unchanged,
        loaded model is a no-op in Triton, and would drop an operator's override). If that fails, the
        server is stopped: the supervisor then restarts it or exits for the orchestrator to."""
        try:
            config = self._get(f"models/{model}/config")
            self._post(f"repository/models/{model}/unload")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and http_ok(f"{self._base}/models/{model}/ready", timeout_s=5):
                time.sleep(0.2)
            self._post(f"repository/models/{model}/load", {"parameters": {"config": json.dumps(config)}})
            self.reloads.append(model)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.error("reloading %s failed (%s); stopping the server", model, exc)
            self.server.terminate()

    @property
    def _base(self) -> str:
        return f"http://{self.server.http_url}/v2"

    def _get(self, path: str):
        request = urllib.request.Request(f"{self._base}/{path}", headers=self.server.admin_headers)
        with urllib.request.urlopen(request, timeout=10) as response:
            return json.load(response)

    def _post(self, path: str, body: Optional[dict] = None, timeout_s: float = 1800):
        request = urllib.request.Request(f"{self._base}/{path}", data=json.dumps(body or {}).encode(),
                                         headers=self.server.admin_headers, method="POST")
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            payload = response.read()
        return json.loads(payload) if payload else None

    def stop(self) -> None:
        self._stopping.set()
