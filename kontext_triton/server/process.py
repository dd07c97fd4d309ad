"""One tritonserver process on a model repository: its command line, start, readiness, stop."""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from .install import TritonInstall, find_triton

# The model repository ships inside the kontext_triton package (package data), so a checkout, an
# editable install and an installed wheel all find it here; `model_repository` at the top of the
# checkout is a link to it.
DEFAULT_MODEL_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"

# Endpoints that change what the server runs or where it writes: loading and unloading models (with
# uploaded files and config overrides), trace and log settings (file paths on the server), shared-memory
# registration. Only callers sending ADMIN_HEADER with the operator's key may use them; inference,
# health, metadata, model config and statistics stay open.
RESTRICTED_APIS = ("model-repository", "trace", "logging", "shared-memory")
ADMIN_HEADER = "kontext-admin-key"
# Seconds tritonserver waits for in-flight requests on SIGTERM (one batch-4 1024x1024 edit on an H100
# takes ~34 s).
DEFAULT_EXIT_TIMEOUT_S = 60


def default_cache_dir() -> Path:
    """Where the wheel's backend links live (shared with the engine's caches)."""
    return Path(os.environ.get("KONTEXT_CACHE_DIR", Path.home() / ".cache" / "kontext-triton"))


def forwarding_directory(server_pid: int) -> Path:
    """The private directory the stubs of one tritonserver share (kontext_triton/forwarding.py), per user."""
    return Path(tempfile.gettempdir()) / f"kontext-forwarding-{os.getuid()}-{server_pid}"


def free_ports(count: int) -> list[int]:
    """Loopback ports free right now (the OS picks them)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def http_ok(url: str, timeout_s: float, headers: Optional[dict] = None) -> bool:
    """True when GET url answers 200 (Triton's health and readiness endpoints)."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=timeout_s) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


class ServerExited(RuntimeError):
    """tritonserver exited before it was ready."""


@dataclass
class TritonServer:
    """One tritonserver process, in a process group of its own with its backend stubs.

    Usable as a context manager; stop() ends it and every stub it started.
    """

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_path: Optional[Path] = None
    models: list[str] = field(default_factory=list)  # load only these; empty = every model in the repository
    extra_args: list[str] = field(default_factory=list)
    exit_timeout_s: int = DEFAULT_EXIT_TIMEOUT_S
    # The key that unlocks RESTRICTED_APIS; a fresh random one per server unless the operator gives one.
    admin_key: str = field(default_factory=lambda: secrets.token_urlsafe(32), repr=False)
    process: Optional[subprocess.Popen] = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    @property
    def admin_headers(self) -> dict[str, str]:
        return {ADMIN_HEADER: self.admin_key}

    def command(self, install: TritonInstall) -> list[str]:
        restricted = f"{','.join(RESTRICTED_APIS)}:{ADMIN_HEADER}={self.admin_key}"
        return [
            str(install.server),
            # resolved: the backend stubs' command lines name model.py under this path (the watchdog reads them)
            f"--model-repository={Path(self.model_repository).resolve()}",
            f"--backend-directory={install.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--exit-on-error=true",
            f"--exit-timeout-secs={self.exit_timeout_s}",
            # Explicit model control lets the stub watchdog reload one model; the repository API
            # that makes possible is restricted to the operator's key.
            "--model-control-mode=explicit",
            # Every config.pbtxt is complete; auto-complete would start one extra stub per Python model
            # just to ask its model.py, importing torch and diffusers first: 5.4 s before the pipeline
            # stubs start (perf/NOTES.md, "The FP8 step's remaining levers and the warm start").
            "--disable-auto-complete-config",
            f"--http-restricted-api={restricted}",
            f"--grpc-restricted-protocol={restricted}",
            *[f"--load-model={m}" for m in (self.models or ["*"])],
            *self.extra_args,
        ]

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        library_path = [str(p) for p in install.library_dirs]
        if env.get("LD_LIBRARY_PATH"):
            library_path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
        # The stub's embedded interpreter finds its prefix through the first `python3` on PATH:
        # this interpreter's bin directory first, so model.py sees this virtual environment. It
        # ignores PYTHONPATH (sys.flags.ignore_environment), so kontext_engine must be installed there.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        return env

    def launch(self) -> None:
        """Starts the process (its own session and process group, which its stubs join)."""
        install = find_triton(default_cache_dir())
        log = open(self.log_path, "ab") if self.log_path else None
        try:
            self.process = subprocess.Popen(
                self.command(install),
                env=self.environment(install),
                stdin=subprocess.DEVNULL,
                stdout=log or None,
                stderr=subprocess.STDOUT if log else None,
                start_new_session=True,
            )
        finally:
            if log:
                log.close()

    def start(self, timeout_s: float = 300.0) -> "TritonServer":
        self.launch()
        self.wait_ready(timeout_s)
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.reap()
                raise ServerExited(f"tritonserver exited with code {self.process.returncode} before it was ready")
            # Triton starts its metrics service last, just after HTTP answers ready: a server is ready for
            # its callers (and for Prometheus) once both answer.
            if http_ok(url, timeout_s=2) and http_ok(self.metrics_url, timeout_s=2):
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def terminate(self) -> None:
        """Asks tritonserver (not its stubs) to shut down: it stops taking requests, answers those in
        flight for up to exit_timeout_s, unloads its models and exits. Safe from a signal handler."""
        if self.running():
            os.kill(self.process.pid, signal.SIGTERM)

    def reap(self) -> None:
        """Kills whatever is left of the process group: stubs orphaned by a crashed server ignore
        SIGTERM and would hold their memory forever."""
        if self.process is None:
            return
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        # Its stubs are gone: their shared directory too (one per server start, else /tmp fills with them).
        shutil.rmtree(forwarding_directory(self.process.pid), ignore_errors=True)

    def stop(self) -> None:
        """terminate(), wait for the shutdown (exit timeout plus a margin), then reap the group."""
        if self.process is None:
            return
        self.terminate()
        try:
            self.process.wait(self.exit_timeout_s + 15)
        except subprocess.TimeoutExpired:
            pass
        self.reap()
        self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()
