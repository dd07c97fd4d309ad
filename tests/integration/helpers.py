"""Raw tritonclient requests, independent of our client package."""

import io
import json

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

MODEL = "flux_kontext"
DTYPES = {"prompt": "BYTES", "image": "BYTES", "seed": "INT64", "steps": "INT32", "guidance": "FP32",
          "width": "INT32", "height": "INT32", "output_format": "BYTES"}
NUMPY = {"BYTES": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}


def client_for(server, protocol):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)
    return httpclient, httpclient.InferenceServerClient(server.http_url, network_timeout=120)


def infer(server, protocol="grpc", dtypes=None, **values):
    """Sends one request with the given fields; `dtypes` overrides a field's wire dtype."""
    module, client = client_for(server, protocol)
    dtypes = {**DTYPES, **(dtypes or {})}
    inputs = []
    for name, value in values.items():
        array = value if isinstance(value, np.ndarray) else np.array([[value]], dtype=NUMPY[dtypes[name]])
        infer_input = module.InferInput(name, list(array.shape), dtypes[name])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    outputs = [module.InferRequestedOutput("output_image"), module.InferRequestedOutput("metadata")]
    result = client.infer(MODEL, inputs, outputs=outputs)
    image = Image.open(io.BytesIO(result.as_numpy("output_image").reshape(-1)[0]))
    return image, json.loads(result.as_numpy("metadata").reshape(-1)[0])


def png(width=96, height=64, color=(30, 120, 200)):
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), color).save(buffer, format="PNG")
    return buffer.getvalue()


def scrape(server) -> dict:
    """Prometheus samples from the server's metrics endpoint: {(name, frozenset(labels)): value}."""
    import re
    import urllib.request

    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    samples = {}
    for line in text.splitlines():
        match = re.match(r"^([a-zA-Z_:][\w:]*)(?:\{(.*)\})? (\S+)$", line)
        if match:
            labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
            samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def metric(server, name, **labels) -> float:
    """Sum of the samples of `name` whose labels include `labels` (0 when absent)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in scrape(server).items() if n == name and wanted <= ls)


def wait_for(condition, timeout_s=15.0, interval_s=0.1):
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval_s)
    return condition()
