"""Where tritonserver and its Python backend are: the container's /opt/tritonserver, or the
server bundled in the nvidia-pytriton wheel (tritonserver 2.51.0 with a stub per Python version)."""

from __future__ import annotations

import sys
import sysconfig
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path

CONTAINER_TRITON = Path("/opt/tritonserver")


class TritonNotFound(RuntimeError):
    """No usable tritonserver: the message names what to install or change."""


@dataclass
class TritonInstall:
    server: Path
    backend_dir: Path
    library_dirs: list[Path] = field(default_factory=list)


def wheel_libraries() -> Path:
    """The shared libraries bundled, under hashed names, in the nvidia-pytriton wheel."""
    import pytriton

    return Path(pytriton.__file__).resolve().parent.parent / "nvidia_pytriton.libs"


def refuse_numpy_2(numpy_version: str) -> None:
    """The wheel's Python backend stub (Triton 2.51) was built with a pybind11 older than numpy 2: under
    numpy 2 every byte of a string input reaches model.py as its first byte, and the stub dies on the
    first request. Refuse to start rather than serve that."""
    if int(numpy_version.split(".")[0]) >= 2:
        raise TritonNotFound(
            f"numpy {numpy_version} is installed, but the Python backend stub of the nvidia-pytriton 0.7.0 wheel "
            "(Triton 2.51) needs numpy 1: under numpy 2 string inputs arrive corrupted. "
            "Install numpy<2 (pyproject.toml pins numpy==1.26.4)."
        )


def _wheel_install(cache_dir: Path) -> TritonInstall:
    """The wheel's server, with a backend directory holding the stub for this Python."""
    try:
        import pytriton
    except ImportError:
        raise TritonNotFound(
            "tritonserver not found: install the 'server' extra (nvidia-pytriton) or use the container"
        ) from None
    refuse_numpy_2(metadata.version("numpy"))
    root = Path(pytriton.__file__).parent / "tritonserver"
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    stub = root / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise TritonNotFound(f"the nvidia-pytriton wheel has no Python backend stub for Python {version}")
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


def find_triton(cache_dir: Path) -> TritonInstall:
    if (CONTAINER_TRITON / "bin/tritonserver").exists():
        return TritonInstall(CONTAINER_TRITON / "bin/tritonserver", CONTAINER_TRITON / "backends")
    return _wheel_install(cache_dir)
