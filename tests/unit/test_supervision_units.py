"""Pieces of kontext-serve that need no tritonserver: when a server counts as ready, whose stubs the
watchdog watches, a supervisor that kills a server ignoring SIGTERM, and the adapter's own parameters."""

import http.server
import signal
import subprocess
import sys
import threading
import time

import pytest

from kontext_triton import parameters
from kontext_triton.server import supervisor as supervision
from kontext_triton.server.process import TritonServer, forwarding_directory, free_ports
from kontext_triton.server.watchdog import stub_processes


class Answers200(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()

    def log_message(self, *_):
        pass


def listening(port):
    endpoint = http.server.ThreadingHTTPServer(("127.0.0.1", port), Answers200)
    threading.Thread(target=endpoint.serve_forever, daemon=True).start()
    return endpoint


def test_a_server_is_ready_only_once_its_metrics_answer_too(tmp_path):
    """Triton 2.51 answers /v2/health/ready a few milliseconds before its metrics service listens;
    a caller (or a Prometheus scrape) told "ready" in between was refused."""
    http_port, grpc_port, metrics_port = free_ports(3)
    server = TritonServer(tmp_path, http_port=http_port, grpc_port=grpc_port, metrics_port=metrics_port)
    endpoints = [listening(http_port)]
    try:
        server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        with pytest.raises(TimeoutError):
            server.wait_ready(timeout_s=1.5)
        endpoints.append(listening(metrics_port))
        server.process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        server.wait_ready(timeout_s=5)
    finally:
        for endpoint in endpoints:
            endpoint.shutdown()
        server.process.kill()
        server.process.wait()


def fake_stub(repository, model, server_pid):
    """A process whose command line reads like a Python backend stub's (argv[0], model.py, ..., server pid)."""
    model_py = repository / model / "1" / "model.py"
    model_py.parent.mkdir(parents=True, exist_ok=True)
    model_py.write_text("import time\ntime.sleep(60)\n")
    argv = ["/opt/backends/python/triton_python_backend_stub", str(model_py), "shm_region", "1048576", "1048576",
            str(server_pid), "/opt/backends/python"]
    return subprocess.Popen(argv, executable=sys.executable)


def test_the_watchdog_sees_only_its_own_servers_stubs(tmp_path):
    mine = [fake_stub(tmp_path, "flux_kontext", 111), fake_stub(tmp_path, "flux_kontext_stream", 111)]
    other = fake_stub(tmp_path, "flux_kontext", 222)  # a second server on the same repository
    try:
        time.sleep(0.3)
        assert stub_processes(tmp_path, 111) == {"flux_kontext": {mine[0].pid}, "flux_kontext_stream": {mine[1].pid}}
        assert stub_processes(tmp_path)["flux_kontext"] == {mine[0].pid, other.pid}
        assert stub_processes(tmp_path / "elsewhere", 111) == {}
    finally:
        for process in (*mine, other):
            process.kill()
            process.wait()


class StubbornServer:
    """A 'server' that ignores SIGTERM, as a hung tritonserver would."""

    exit_timeout_s = 0.5

    def start(self, timeout_s):
        self.process = subprocess.Popen(
            [sys.executable, "-c", "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(60)"],
            start_new_session=True)
        return self

    def terminate(self):
        self.process.send_signal(signal.SIGTERM)

    def reap(self):
        self.process.kill()


def test_a_server_that_ignores_sigterm_is_killed_after_its_exit_timeout(monkeypatch):
    monkeypatch.setattr(supervision, "KILL_MARGIN_S", 0.5)
    supervisor = supervision.Supervisor(StubbornServer(), supervision.RestartPolicy("exit"), watchdog=False)
    threading.Timer(0.5, supervisor.request_stop).start()
    started = time.monotonic()
    assert supervisor.run() == 1  # stopped, but not cleanly
    assert time.monotonic() - started < 10


def test_reaping_a_server_removes_its_stubs_shared_directory():
    server = TritonServer()
    server.process = subprocess.Popen([sys.executable, "-c", "pass"], start_new_session=True)
    server.process.wait()
    shared = forwarding_directory(server.process.pid)
    shared.mkdir(mode=0o700)
    (shared / "key").write_text("k" * 43)
    server.reap()
    assert not shared.exists()  # one per server start: left behind, /tmp collects them by the hundred


def test_request_timeout_is_read_validated_and_overridable():
    serving, engine = parameters.split_parameters({"request_timeout_s": "120", "profile": "cpu-smoke"})
    assert parameters.request_timeout_s(serving) == 120 and engine == {"profile": "cpu-smoke"}
    serving, _ = parameters.split_parameters({}, {"KONTEXT_SETTING_REQUEST_TIMEOUT_S": "30"})
    assert parameters.request_timeout_s(serving) == 30
    for bad in ("0", "-5", "soon", "inf"):
        with pytest.raises(ValueError, match="request_timeout_s"):
            parameters.request_timeout_s({"request_timeout_s": bad})
