"""Start-up failures fail fast with a clear line; a dead backend stub is noticed and service returns."""

import os
import signal
import time
import urllib.error
import urllib.request

import pytest

from kontext_client import KontextClient, KontextError
from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY, TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from tests.integration.conftest import running_server

pytestmark = pytest.mark.integration


def start_failing(tmp_path, parameters) -> str:
    repository = write_repository(tmp_path / "model_repository", parameters, models=("flux_kontext",))
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(repository, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port,
                          log_path=tmp_path / "server.log")
    started = time.monotonic()
    with pytest.raises(RuntimeError, match="exited"):
        server.start(timeout_s=120)
    assert time.monotonic() - started < 60
    return (tmp_path / "server.log").read_text()


def test_a_bad_model_path_fails_start_up_naming_it(tmp_path):
    log = start_failing(tmp_path, {"model_source": "/nonexistent/FLUX.1-Kontext-dev"})
    assert "model_source '/nonexistent/FLUX.1-Kontext-dev' is not a directory" in log


def test_an_unsupported_option_fails_start_up_naming_it(tmp_path):
    log = start_failing(tmp_path, {"fp8": "true"})
    assert "fp8 needs a CUDA GPU" in log


def test_an_environment_override_reaches_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KONTEXT_SETTING_FP8", "true")  # how a Kubernetes deployment sets options
    log = start_failing(tmp_path, {})
    assert "fp8 needs a CUDA GPU" in log


def test_an_unknown_parameter_fails_start_up_naming_it(tmp_path):
    log = start_failing(tmp_path, {"compile_mod": "default"})
    assert "unknown parameter(s) ['compile_mod']" in log


def model_ready(server) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/flux_kontext/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_a_killed_stub_is_reported_not_ready_then_reloaded(tmp_path_factory, request):
    with running_server(DEFAULT_MODEL_REPOSITORY, tmp_path_factory.mktemp("fault"), request.node) as server:
        with KontextClient(server.grpc_url) as client:
            client.generate("x", width=64, height=64, steps=1)
            (stub,) = server.watchdog.stubs()["flux_kontext"]
            killed = time.monotonic()
            os.kill(stub, signal.SIGKILL)
            readiness, errors, recovered = [], [], None
            while time.monotonic() - killed < 120 and recovered is None:
                readiness.append(model_ready(server))
                try:
                    client.generate("x", width=64, height=64, steps=1)
                    recovered = time.monotonic() - killed
                except KontextError as exc:
                    errors.append(str(exc))
                    time.sleep(0.1)
        print(f"\nfault run: stub {stub} killed; {len(errors)} failed requests "
              f"(first: {errors[0] if errors else '-'}); not-ready observations {readiness.count(False)}; "
              f"service back after {recovered:.1f} s; reloads {server.watchdog.reloads}")
        assert recovered is not None and recovered < 120
        assert server.watchdog.reloads == ["flux_kontext"]
        assert False in readiness  # readiness reflected the broken instance while it was reloaded
        assert model_ready(server)
