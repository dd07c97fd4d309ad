"""Start-up failures fail fast with a clear line; a dead backend stub is noticed and service returns."""

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request

import pytest
from tritonclient.utils import InferenceServerException

from kontext_client import KontextClient
from kontext_triton.server.process import DEFAULT_MODEL_REPOSITORY, TritonServer, free_ports
from kontext_triton.server.repository import write_repository
from kontext_triton.server.watchdog import stub_processes
from tests.integration.conftest import running_supervisor
from tests.integration.helpers import infer, metric, png, wait_for

pytestmark = pytest.mark.integration


def start_failing(tmp_path, parameters) -> str:
    repository = write_repository(tmp_path / "model_repository", parameters)
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
    # No auto-complete stub ran first: it would import torch and diffusers just to ask model.py for a
    # config (5.4 s of a start in run O, perf/NOTES.md)
    assert '"auto-complete-config":"false"' in log


def test_a_profile_the_device_cannot_run_fails_start_up_naming_it(tmp_path):
    log = start_failing(tmp_path, {"profile": "gpu-fp8"})
    assert "fp8 needs a CUDA GPU" in log


def test_an_environment_override_reaches_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("KONTEXT_SETTING_PROFILE", "gpu-fp8")  # how a Kubernetes deployment sets options
    log = start_failing(tmp_path, {})
    assert "fp8 needs a CUDA GPU" in log


def test_an_unknown_parameter_fails_start_up_naming_it(tmp_path):
    log = start_failing(tmp_path, {"compile": "regional"})  # an experiment switch, not an operator parameter
    assert "unknown parameter(s) ['compile']" in log


PIPELINE = "flux_kontext_stream"  # the model whose stub holds the pipeline; flux_kontext forwards to it


def model_ready(server, model=PIPELINE) -> bool:
    try:
        with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{model}/ready", timeout=2) as r:
            return r.status == 200
    except (urllib.error.URLError, OSError):
        return False


def test_a_killed_stub_is_reported_not_ready_then_reloaded(tmp_path_factory, request):
    with running_supervisor(DEFAULT_MODEL_REPOSITORY, tmp_path_factory.mktemp("fault"), request.node) as supervisor:
        server = supervisor.server
        with KontextClient(server.grpc_url) as client:
            client.generate("x", width=64, height=64, steps=1)  # unary: through the front
            (stub,) = stub_processes(server.model_repository)[PIPELINE]
            killed = time.monotonic()
            os.kill(stub, signal.SIGKILL)
            readiness = []
            while time.monotonic() - killed < 120 and not supervisor.watchdog.reloads:
                readiness.append(model_ready(server))
                time.sleep(0.1)
            # The client rides through the reload by itself (it retries "not ready" for a while).
            client.generate("x", width=64, height=64, steps=1)
            recovered = time.monotonic() - killed
        print(f"\nfault run: stub {stub} killed; not-ready observations {readiness.count(False)}; "
              f"service back after {recovered:.1f} s; reloads {supervisor.watchdog.reloads}")
        assert recovered < 120
        assert supervisor.watchdog.reloads == [PIPELINE]
        assert False in readiness  # readiness reflected the broken instance while it was reloaded
        assert model_ready(server)


def test_a_unary_request_whose_pipeline_process_dies_is_answered_at_once(tmp_path_factory, request):
    """Triton 2.51 never ends a BLS call whose pipeline stub died; the front watches the process that
    accepted the request and answers UNAVAILABLE, and the next request is served after the reload."""
    with running_supervisor(DEFAULT_MODEL_REPOSITORY, tmp_path_factory.mktemp("dies"), request.node) as supervisor:
        server = supervisor.server
        outcome = []

        def slow_unary():
            try:
                infer(server, prompt=b"x", image=png(512, 512), width=512, height=512, steps=100,
                      infer_options={"client_timeout": 120.0})
                outcome.append("answered with an image")
            except InferenceServerException as exc:
                outcome.append(exc)

        thread = threading.Thread(target=slow_unary)
        thread.start()
        assert wait_for(lambda: metric(server, "kontext_batch_size", model=PIPELINE) > 0, 30)
        (stub,) = stub_processes(server.model_repository)[PIPELINE]
        killed = time.monotonic()
        os.kill(stub, signal.SIGKILL)
        thread.join(30)
        answered_s = time.monotonic() - killed
        (error,) = outcome
        assert isinstance(error, InferenceServerException), error
        assert error.status() == "StatusCode.UNAVAILABLE" and "died" in error.message()
        assert answered_s < 5
        with KontextClient(server.grpc_url) as client:  # retries while the watchdog reloads the pipeline
            client.generate("x", width=64, height=64, steps=1)
        print(f"\npipeline stub killed mid-request: the unary request was answered UNAVAILABLE after "
              f"{answered_s:.1f} s; served again after {time.monotonic() - killed:.1f} s")


def admin_post(server, path, body):
    request = urllib.request.Request(f"http://{server.http_url}/v2/{path}", data=json.dumps(body).encode(),
                                     headers=server.admin_headers, method="POST")
    urllib.request.urlopen(request, timeout=120).close()


def served_config(server) -> dict:
    with urllib.request.urlopen(f"http://{server.http_url}/v2/models/{PIPELINE}/config", timeout=10) as r:
        return json.load(r)


def test_an_operators_config_load_is_left_alone(tmp_path, request):
    """Model Analyzer's remote mode and operators load configs through the repository API: that replaces
    the stub, and the watchdog must not take it for a death and revert it."""
    repository = write_repository(tmp_path / "model_repository")
    with running_supervisor(repository, tmp_path, request.node) as supervisor:
        server = supervisor.server
        config = served_config(server)
        config["parameters"]["request_timeout_s"] = {"string_value": "123"}
        admin_post(server, f"repository/models/{PIPELINE}/load", {"parameters": {"config": json.dumps(config)}})
        time.sleep(supervisor.watchdog.grace_s + 5)
        assert served_config(server)["parameters"]["request_timeout_s"]["string_value"] == "123"
        assert supervisor.watchdog.reloads == []
        # A stub that then dies is reloaded with the operator's configuration, not the file's.
        (stub,) = stub_processes(repository)[PIPELINE]
        os.kill(stub, signal.SIGKILL)
        assert wait_for(lambda: supervisor.watchdog.reloads == [PIPELINE] and model_ready(server), 120)
        assert served_config(server)["parameters"]["request_timeout_s"]["string_value"] == "123"
        # An operator's unload is not a death either.
        admin_post(server, f"repository/models/{PIPELINE}/unload", {})
        time.sleep(supervisor.watchdog.grace_s + 3)
        assert not model_ready(server) and supervisor.watchdog.reloads == [PIPELINE]


def test_the_watchdog_can_be_switched_off(tmp_path, request):
    repository = write_repository(tmp_path / "model_repository")
    with running_supervisor(repository, tmp_path, request.node, watchdog=False) as supervisor:
        (stub,) = stub_processes(repository)[PIPELINE]
        os.kill(stub, signal.SIGKILL)
        time.sleep(6)
        assert supervisor.watchdog is None and PIPELINE not in stub_processes(repository)


@pytest.mark.parametrize("reloaded", ["flux_kontext", PIPELINE])
def test_a_request_during_a_reload_is_served_once_the_model_is_back(tmp_path, request, reloaded):
    """During a reload Triton answers "unknown model" (the front passes on the pipeline model's answer); a
    unary request retries for a while instead of failing, whichever of the two models is reloaded."""
    repository = write_repository(tmp_path / "model_repository")
    with running_supervisor(repository, tmp_path, request.node) as supervisor:
        server = supervisor.server
        admin_post(server, f"repository/models/{reloaded}/unload", {})
        assert wait_for(lambda: not model_ready(server, reloaded), 30)
        timer = threading.Timer(2.0, admin_post, (server, f"repository/models/{reloaded}/load", {}))
        timer.start()
        with KontextClient(server.grpc_url) as client:
            result = client.generate("x", width=64, height=64, steps=1)
        timer.join()
        assert result.image.size == (64, 64)
