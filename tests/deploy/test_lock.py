"""The image's lock files are what pyproject.toml resolves to today, for the image's Python and platform:
a change to a pin without a new lock fails here. (Needs the package index.)"""

import subprocess

import pytest

from tests.deploy.tools import ROOT, UV

# lock file -> how it is resolved (the same command, minus -o, regenerates it)
LOCKS = {
    # production image: NGC Triton 25.10, Python 3.12, glibc 2.39; FP8 and First Block Cache
    "deploy/image/requirements-gpu.lock": ["--extra", "cache", "--extra", "fp8", "--python-version", "3.12",
                                           "--python-platform", "x86_64-manylinux_2_35"],
    # test image: Debian bookworm's Python 3.11, CPU torch from the machine's wheel, the wheel's tritonserver
    "deploy/image/requirements-cpu-test.lock": ["--extra", "server", "--extra", "cache", "--python-version", "3.11",
                                                "--python-platform", "x86_64-manylinux_2_35",
                                                "--find-links", "/opt/wheels"],
}


@pytest.mark.parametrize("lock", sorted(LOCKS))
def test_the_lock_is_what_pyproject_resolves_to(lock):
    done = subprocess.run([str(UV), "pip", "compile", "pyproject.toml", *LOCKS[lock], "--no-header", "--quiet"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (ROOT / lock).read_text(), f"{lock} is stale: regenerate it with the command above (-o {lock})"
