"""The Dockerfile builds and the container serves: built with podman on a Debian base bootstrapped here
(no registry: BASE is a build argument), CPU torch and the wheel's tritonserver, the tiny model, one
request through a published loopback port, a clean stop. Needs root, podman, runc and debootstrap
(`.ci/run` installs them); elsewhere it is skipped, and under CI a missing tool fails it."""

import os
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kontext_client import KontextClient
from kontext_triton.server.process import free_ports, http_ok
from tests.deploy.tools import ROOT

BASE = "localhost/kontext-test-base:bookworm"
IMAGE = "localhost/flux-kontext-triton:test"
MISSING = [tool for tool in ("podman", "runc", "debootstrap") if shutil.which(tool) is None]
if os.geteuid() != 0:
    MISSING.append("root")

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(bool(MISSING) and not os.environ.get("CI"), reason=f"needs {', '.join(MISSING)}"),
]


def sh(*command, timeout_s=900, **options):
    done = subprocess.run(command, capture_output=True, text=True, timeout=timeout_s, **options)
    assert done.returncode == 0, f"{' '.join(command)}\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


@pytest.fixture(scope="module")
def podman(tmp_path_factory):
    """podman with runc and container limits at or below this machine's hard limits; the base image
    bootstrapped from Debian's archive and imported (cached as a tarball between runs)."""
    assert not MISSING, f"missing: {MISSING}"
    scratch = tmp_path_factory.mktemp("podman")
    conf = scratch / "containers.conf"
    conf.write_text('[engine]\nruntime = "runc"\n[containers]\ndefault_ulimits = ["nofile=4096:4096", "nproc=4096:4096"]\n')
    env = {**os.environ, "CONTAINERS_CONF": str(conf)}
    tarball = Path(os.environ["KONTEXT_CACHE_DIR"]) / "debian-bookworm-python3.tar"
    if not tarball.exists():
        rootfs = scratch / "rootfs"
        sh("debootstrap", "--variant=minbase", "--include=python3,python3-venv,libpython3.11,ca-certificates",
           "bookworm", str(rootfs), "http://deb.debian.org/debian")
        sh("tar", "-C", str(rootfs), "-cf", str(tarball), ".")
    sh("podman", "import", str(tarball), BASE, env=env)
    return env


def test_the_image_builds_and_serves_a_request(podman, tmp_path):
    started = time.monotonic()
    sh("podman", "build", "--format", "docker", "--isolation", "chroot", "-t", IMAGE,
       "--build-arg", f"BASE={BASE}", "--build-arg", "LOCK=deploy/image/requirements-cpu-test.lock",
       "--build-arg", "FIND_LINKS=/wheels", "--volume", "/opt/wheels:/wheels:ro",
       "--secret", "id=ca_bundle,src=/etc/ssl/certs/ca-certificates.crt", ".", cwd=ROOT, env=podman)
    build_s = time.monotonic() - started
    size_mb = int(sh("podman", "image", "inspect", IMAGE, "--format", "{{.Size}}", env=podman)) / 1e6
    (port,) = free_ports(1)
    name = f"kontext-test-{port}"
    sh("podman", "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:8000", "-e", "KONTEXT_SETTING_PROFILE=cpu-smoke",
       IMAGE, env=podman)
    try:
        deadline = time.monotonic() + 240
        while not http_ok(f"http://127.0.0.1:{port}/v2/health/ready", 2) and time.monotonic() < deadline:
            time.sleep(1)
        ready_s = time.monotonic() - started - build_s
        with KontextClient(f"127.0.0.1:{port}", protocol="http", timeout_s=120) as client:
            result = client.generate("a lighthouse at dusk", width=64, height=64, steps=2)
        assert result.image.size == (64, 64)
        assert sh("podman", "exec", name, "id", "-u", env=podman).strip() == "10001"
        with pytest.raises(urllib.error.HTTPError):  # model control stays the operator's inside the container too
            urllib.request.urlopen(urllib.request.Request(
                f"http://127.0.0.1:{port}/v2/repository/models/flux_kontext/unload", data=b"{}", method="POST"))
        sh("podman", "stop", "-t", "90", name, env=podman)
        exit_code = sh("podman", "inspect", name, "--format", "{{.State.ExitCode}}", env=podman).strip()
    finally:
        logs = subprocess.run(["podman", "logs", name], capture_output=True, text=True, env=podman)
        subprocess.run(["podman", "rm", "-f", name], capture_output=True, env=podman)
    print(f"\nimage: built in {build_s:.0f} s, {size_mb:.0f} MB; container ready {ready_s:.0f} s after start; "
          f"one 64x64 request served; stopped with exit code {exit_code}")
    assert exit_code == "0", logs.stdout[-3000:] + logs.stderr[-3000:]
