"""No one controls models but the operator: without the launcher's key, every endpoint that loads,
unloads, uploads, or points the server at files is refused over HTTP and gRPC; inference is open."""

import base64
import json
import urllib.error
import urllib.request

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.helpers import infer

pytestmark = pytest.mark.integration

EVIL_MODEL_PY = """
import pathlib
pathlib.Path({marker!r}).write_text("uploaded code ran")
class TritonPythonModel:
    def execute(self, requests):
        return []
"""
EVIL_CONFIG = json.dumps({"name": "evil", "backend": "python", "max_batch_size": 0,
                          "input": [{"name": "x", "data_type": "TYPE_FP32", "dims": [1]}],
                          "output": [{"name": "y", "data_type": "TYPE_FP32", "dims": [1]}]})


def http_post(server, path, body, headers=None) -> tuple[int, str]:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(body).encode(),
                                     headers=headers or {}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def upload_body(marker):
    code = base64.b64encode(EVIL_MODEL_PY.format(marker=str(marker)).encode()).decode()
    return {"parameters": {"config": EVIL_CONFIG, "file:1/model.py": code}}


def restricted_http_calls(marker):
    return {
        "upload and load a model": ("/v2/repository/models/evil/load", upload_body(marker)),
        "load with a config override": ("/v2/repository/models/flux_kontext/load",
                                        {"parameters": {"config": json.dumps({"parameters": {
                                            "model_source": {"string_value": "/etc"}}})}}),
        "unload": ("/v2/repository/models/flux_kontext/unload", {}),
        "repository index": ("/v2/repository/index", {}),
        "log file": ("/v2/logging", {"log_file": str(marker)}),
        "trace file": ("/v2/trace/setting", {"trace_file": str(marker), "trace_level": ["TIMESTAMPS"]}),
        "system shared memory": ("/v2/systemsharedmemory/region/r/register",
                                 {"key": "/triton_python_backend_shm_region_1", "offset": 0, "byte_size": 64}),
    }


def test_http_control_endpoints_need_the_operators_key(server, tmp_path):
    marker = tmp_path / "marker"
    for description, (path, body) in restricted_http_calls(marker).items():
        status, text = http_post(server, path, body)
        assert status == 403 and "restricted" in text, (description, status, text)
        status, _ = http_post(server, path, body, headers={"kontext-admin-key": "guess"})
        assert status == 403, description
    assert not marker.exists()
    image, _ = infer(server, protocol="http", prompt=b"x", steps=1, width=64, height=64)  # inference is open
    assert image.size == (64, 64)


def test_grpc_control_calls_need_the_operators_key(server, tmp_path):
    marker = tmp_path / "marker"
    client = grpcclient.InferenceServerClient(server.grpc_url)
    calls = {
        "upload and load a model": lambda: client.load_model(
            "evil", config=EVIL_CONFIG, files={"file:1/model.py": EVIL_MODEL_PY.format(marker=str(marker)).encode()}),
        "unload": lambda: client.unload_model("flux_kontext"),
        "repository index": lambda: client.get_model_repository_index(),
        "log file": lambda: client.update_log_settings({"log_file": str(marker)}),
        "trace file": lambda: client.update_trace_settings(settings={"trace_file": str(marker)}),
        "system shared memory": lambda: client.register_system_shared_memory("r", "/x", 64),
    }
    for description, call in calls.items():
        with pytest.raises(InferenceServerException, match="restricted"):
            call()
    assert not marker.exists()
    assert client.is_model_ready("flux_kontext")
    image, _ = infer(server, prompt=b"x", steps=1, width=64, height=64)
    assert image.size == (64, 64)


def test_the_operators_key_opens_them(server):
    status, text = http_post(server, "/v2/repository/index", {}, headers=server.admin_headers)
    assert status == 200 and {"name": "flux_kontext", "version": "1", "state": "READY"} in json.loads(text)
    client = grpcclient.InferenceServerClient(server.grpc_url)
    index = client.get_model_repository_index(
        headers={"triton-grpc-protocol-kontext-admin-key": server.admin_key}, as_json=True)
    assert any(m["name"] == "flux_kontext" for m in index["models"])
