"""Starts tritonserver on our model repository, waits until it is ready, prints the endpoints.

Locally the server binary comes from the ``nvidia-pytriton`` wheel (tritonserver 2.51.0 with the
Python backend and a stub per Python version); in a container it is ``/opt/tritonserver``.
Binds 127.0.0.1 unless told otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

from .loading import default_cache_dir

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL_REPOSITORY = REPO_ROOT / "model_repository"
CONTAINER_TRITON = Path("/opt/tritonserver")


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


def wheel_libraries() -> Path:
    """The shared libraries bundled, under hashed names, in the nvidia-pytriton wheel."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"


def http_ok(url: str, timeout_s: float) -> bool:
    """True when GET url answers 200 (Triton's health and readiness endpoints)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError):
        return False


@dataclass
class TritonInstall:
    server: Path
    backend_dir: Path
    library_dirs: list[Path] = field(default_factory=list)


def _wheel_install(cache_dir: Path) -> TritonInstall:
    """The nvidia-pytriton wheel's server, with a backend directory holding the stub for this Python."""
    try:
        import pytriton
    except ImportError:
        raise SystemExit("tritonserver not found: install the 'server' extra (nvidia-pytriton) or use the container") from None
    refuse_numpy_2(metadata.version("numpy"))
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise SystemExit(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
    backend = cache_dir / "triton-backends" / version / "python"
    backend.mkdir(parents=True, exist_ok=True)
    for source in (root / "backends/python/libtriton_python.so", root / "backends/python/triton_python_backend_utils.py", stub):
        link = backend / source.name
        if not link.exists() or link.resolve() != source.resolve():
            link.unlink(missing_ok=True)
            link.symlink_to(source)
    # The stub links libpython3.X.so.1.0; the running interpreter's copy must win over the system's.
    return TritonInstall(root / "bin/tritonserver", backend.parent,
                         [Path(sysconfig.get_config_var("LIBDIR")), wheel_libraries()])


def refuse_numpy_2(numpy_version: str) -> None:
    """The wheel's Python backend stub (Triton 2.51) was built with a pybind11 older than numpy 2: under
    numpy 2 every byte of a string input reaches model.py as its first byte, and the stub dies on the
    first request (seen on the GPU machines, perf/NOTES.md). Refuse to start rather than serve that."""
    if int(numpy_version.split(".")[0]) >= 2:
        raise SystemExit(
            f"numpy {numpy_version} is installed, but the Python backend stub of the nvidia-pytriton 0.7.0 wheel "
            "(Triton 2.51) needs numpy 1: under numpy 2 string inputs arrive corrupted. "
            "Install numpy<2 (pyproject.toml pins numpy==1.26.4)."
        )


def find_triton(cache_dir: Path) -> TritonInstall:
    if (CONTAINER_TRITON / "bin/tritonserver").exists():
        return TritonInstall(CONTAINER_TRITON / "bin/tritonserver", CONTAINER_TRITON / "backends")
    return _wheel_install(cache_dir)


@dataclass
class TritonServer:
    """One tritonserver process. Usable as a context manager; stop() kills it and reaps it."""

    model_repository: Path = DEFAULT_MODEL_REPOSITORY
    host: str = "127.0.0.1"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    log_path: Path | None = None
    models: list[str] = field(default_factory=list)  # load only these; empty = every model in the repository
    extra_args: list[str] = field(default_factory=list)
    supervise: bool = True  # reload a model whose Python stub died (see StubWatchdog)
    process: subprocess.Popen | None = None
    watchdog: "StubWatchdog | None" = None

    @property
    def http_url(self) -> str:
        return f"{self.host}:{self.http_port}"

    @property
    def grpc_url(self) -> str:
        return f"{self.host}:{self.grpc_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://{self.host}:{self.metrics_port}/metrics"

    def command(self, install: TritonInstall) -> list[str]:
        return [
            str(install.server),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={install.backend_dir}",
            f"--http-address={self.host}",
            f"--http-port={self.http_port}",
            f"--grpc-address={self.host}",
            f"--grpc-port={self.grpc_port}",
            f"--metrics-address={self.host}",
            f"--metrics-port={self.metrics_port}",
            "--allow-metrics=true",
            "--exit-on-error=true",
            # explicit mode, so that the watchdog can reload a model through the repository API
            "--model-control-mode=explicit",
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

    def start(self, timeout_s: float = 300.0) -> "TritonServer":
        install = find_triton(default_cache_dir())
        log = open(self.log_path, "ab") if self.log_path else None
        self.process = subprocess.Popen(
            self.command(install),
            env=self.environment(install),
            stdout=log or None,
            stderr=subprocess.STDOUT if log else None,
            start_new_session=True,
        )
        if log:
            log.close()
        self.wait_ready(timeout_s)
        if self.supervise:
            self.watchdog = StubWatchdog(self)
            self.watchdog.start()
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} before it was ready")
            if http_ok(url, timeout_s=2):
                return
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 30.0) -> None:
        if self.watchdog is not None:
            self.watchdog.stop()
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)  # the server and its backend stubs
        try:
            self.process.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()

    def __enter__(self) -> "TritonServer":
        return self.start() if self.process is None else self

    def __exit__(self, *exc) -> None:
        self.stop()


class StubWatchdog(threading.Thread):
    """Reloads a model whose Python backend stub process died.

    Triton 2.51 keeps reporting such a model ready while every request fails with "Stub process ...
    is not healthy", and never restarts the stub (triton-inference-server/server#8604). Every second
    this thread compares each model's stub processes with those it saw last; when one has vanished it
    asks Triton to reload the model (explicit model control). During the reload the model reports
    not ready, then serves again.
    """

    def __init__(self, server: "TritonServer", interval_s: float = 1.0):
        super().__init__(name="stub-watchdog", daemon=True)
        self.server = server
        self.interval_s = interval_s
        self.repository = Path(server.model_repository).resolve()
        self.reloads: list[str] = []
        self._stopping = threading.Event()

    def stubs(self) -> dict[str, set[int]]:
        """Live stub pids per model, read from /proc."""
        found: dict[str, set[int]] = {}
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                argv = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if len(argv) > 1 and argv[0].endswith(b"triton_python_backend_stub"):
                model_py = Path(argv[1].decode(errors="replace"))
                if model_py.parent.parent.parent == self.repository:
                    found.setdefault(model_py.parent.parent.name, set()).add(int(entry.name))
        return found

    def run(self) -> None:
        known = self.stubs()
        while not self._stopping.wait(self.interval_s):
            current = self.stubs()
            if self.server.process is None or self.server.process.poll() is not None:
                return  # the server itself is gone: its stubs went with it
            for model, pids in known.items():
                if pids - current.get(model, set()) and self._server_live():
                    print(f"kontext-serve: a stub of model {model} died; reloading it", file=sys.stderr, flush=True)
                    self.reload(model)
                    current = self.stubs()
            known = current

    def reload(self, model: str) -> None:
        """Unload, then load: a plain load of an unchanged, loaded model is a no-op in Triton."""
        base = f"http://{self.server.http_url}/v2"
        try:
            self._post(f"{base}/repository/models/{model}/unload")
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline and http_ok(f"{base}/models/{model}/ready", timeout_s=5):
                time.sleep(0.2)
            self._post(f"{base}/repository/models/{model}/load")
            self.reloads.append(model)
        except (urllib.error.URLError, OSError) as exc:
            print(f"kontext-serve: reloading {model} failed: {exc}", file=sys.stderr, flush=True)

    def _server_live(self) -> bool:
        """False while the server shuts down (its stubs exit then too) or once watching stopped."""
        alive = self.server.process is not None and self.server.process.poll() is None
        return alive and not self._stopping.is_set() and http_ok(f"http://{self.server.http_url}/v2/health/live", 5)

    @staticmethod
    def _post(url: str) -> None:
        urllib.request.urlopen(urllib.request.Request(url, data=b"{}", method="POST"), timeout=1800).close()

    def stop(self) -> None:
        self._stopping.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model-repository", type=Path, default=DEFAULT_MODEL_REPOSITORY)
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: loopback only)")
    parser.add_argument("--http-port", type=int, default=8000)
    parser.add_argument("--grpc-port", type=int, default=8001)
    parser.add_argument("--metrics-port", type=int, default=8002)
    parser.add_argument("--ready-timeout", type=float, default=900.0, help="seconds to wait for readiness")
    parser.add_argument("--model", action="append", default=[], dest="models",
                        help="load only this model (repeatable); on a GPU each model holds its own pipeline")
    parser.add_argument("extra", nargs="*", help="further tritonserver flags, after --")
    args = parser.parse_args(argv)

    server = TritonServer(
        args.model_repository, args.host, args.http_port, args.grpc_port, args.metrics_port,
        models=args.models, extra_args=args.extra,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: server.stop())
    try:
        server.start(args.ready_timeout)
    except (RuntimeError, TimeoutError) as exc:
        print(f"kontext-serve: {exc}", file=sys.stderr)
        return 1
    print(
        f"tritonserver ready: grpc {server.grpc_url}  http http://{server.http_url}  metrics {server.metrics_url}",
        flush=True,
    )
    return server.process.wait()


if __name__ == "__main__":
    sys.exit(main())
