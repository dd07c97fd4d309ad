"""Raw tritonclient requests, independent of our client package."""

import io
import json

import numpy as np
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from PIL import Image

MODEL = "flux_kontext"
DTYPES = {"prompt": "BYTES", "image": "BYTES", "seed": "INT64", "steps": "INT32", "guidance": "FP32",
          "width": "INT32", "height": "INT32", "output_format": "BYTES", "cache_threshold": "FP32"}
NUMPY = {"BYTES": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}


def client_for(server, protocol):
    if protocol == "grpc":
        return grpcclient, grpcclient.InferenceServerClient(server.grpc_url)
    return httpclient, httpclient.InferenceServerClient(server.http_url, network_timeout=120)


def infer(server, protocol="grpc", dtypes=None, client=None, infer_options=None, **values):
    """Sends one request with the given fields; `dtypes` overrides a field's wire dtype, `client` the
    tritonclient client, `infer_options` adds keywords of infer() (priority, timeout, ...)."""
    module, default_client = client_for(server, protocol)
    client = client or default_client
    dtypes = {**DTYPES, **(dtypes or {})}
    inputs = []
    for name, value in values.items():
        array = value if isinstance(value, np.ndarray) else np.array([[value]], dtype=NUMPY[dtypes[name]])
        infer_input = module.InferInput(name, list(array.shape), dtypes[name])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    outputs = [module.InferRequestedOutput("output_image"), module.InferRequestedOutput("metadata")]
    result = client.infer(MODEL, inputs, outputs=outputs, **(infer_options or {}))
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


class ServeProcess:
    """`kontext-serve` as an operator runs it: a subprocess on free loopback ports, output captured."""

    def __init__(self, repository, log_path, *flags):
        import subprocess
        import sys
        import threading

        from kontext_triton.server.process import free_ports

        self.http_port, self.grpc_port, self.metrics_port = free_ports(3)
        self.http_url, self.grpc_url = f"127.0.0.1:{self.http_port}", f"127.0.0.1:{self.grpc_port}"
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.repository = repository
        self.log_path = log_path
        self.process = subprocess.Popen(
            [sys.executable, "-m", "kontext_triton.server.cli", f"--model-repository={repository}",
             f"--http-port={self.http_port}", f"--grpc-port={self.grpc_port}", f"--metrics-port={self.metrics_port}",
             *flags],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        with open(self.log_path, "w") as log:
            for raw in self.process.stdout:
                line = raw.decode(errors="replace")
                self.lines.append(line)
                log.write(line)
                log.flush()

    def ready_count(self) -> int:
        return sum(line.startswith("tritonserver ready:") for line in self.lines)

    def wait_ready(self, count=1, timeout_s=180.0):
        if not wait_for(lambda: self.ready_count() >= count or self.process.poll() is not None, timeout_s):
            raise TimeoutError(f"not ready ({count}) within {timeout_s} s:\n{self.output()[-4000:]}")
        assert self.ready_count() >= count, self.output()[-4000:]

    def output(self) -> str:
        return "".join(self.lines)

    def stop(self):
        import signal
        import subprocess

        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(120)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._reader.join(10)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
