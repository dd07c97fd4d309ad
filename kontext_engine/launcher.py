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
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
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
        raise SystemExit("tritonserver not found: install the 'server' extra (nvidia-pytriton) or use the container")
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
    libs = Path(pytriton.__file__).parent.parent / "nvidia_pytriton.libs"
    # The stub links libpython3.X.so.1.0; the running interpreter's copy must win over the system's.
    return TritonInstall(root / "bin/tritonserver", backend.parent, [Path(sysconfig.get_config_var("LIBDIR")), libs])


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
    models: list[str] = field(default_factory=list)  # load only these (explicit mode); empty = all
    extra_args: list[str] = field(default_factory=list)
    process: subprocess.Popen | None = None

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
            *(["--model-control-mode=explicit", *[f"--load-model={m}" for m in self.models]] if self.models else []),
            *self.extra_args,
        ]

    def environment(self, install: TritonInstall) -> dict[str, str]:
        env = dict(os.environ)
        library_path = [str(p) for p in install.library_dirs]
        if env.get("LD_LIBRARY_PATH"):
            library_path.append(env["LD_LIBRARY_PATH"])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(library_path)
        # The stub's embedded interpreter finds its prefix through the first `python3` on PATH:
        # this interpreter's bin directory first, so model.py sees this virtual environment.
        env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
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
        return self

    def wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        url = f"http://{self.http_url}/v2/health/ready"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"tritonserver exited with code {self.process.returncode} before it was ready")
            try:
                with urllib.request.urlopen(url, timeout=2) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            time.sleep(0.5)
        self.stop()
        raise TimeoutError(f"tritonserver was not ready within {timeout_s:.0f} s")

    def stop(self, grace_s: float = 30.0) -> None:
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
