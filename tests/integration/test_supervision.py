"""kontext-serve keeps the service up: SIGTERM answers what is in flight and exits 0; a crashed or
killed tritonserver is restarted (or, in exit mode, reported with a non-zero exit); no stub outlives
its server. Figures are printed (pytest -s) and quoted in the README."""

import os
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from kontext_client import KontextClient, KontextError, ServerUnavailableError
from kontext_triton.server.repository import write_repository
from kontext_triton.server.watchdog import stub_processes
from tests.integration.helpers import ServeProcess, png, wait_for

pytestmark = pytest.mark.integration
SLOW = dict(width=512, height=512, steps=60)  # a few seconds on the CPU


@pytest.fixture
def repository(tmp_path):
    return write_repository(tmp_path / "model_repository")


def stub_pids(repository) -> set[int]:
    return set().union(*stub_processes(repository).values())


def triton_pid(repository) -> int:
    """The tritonserver serving `repository` (the parent of its stubs)."""
    (stub, *_) = stub_pids(repository)
    return int(Path(f"/proc/{stub}/stat").read_text().rsplit(")", 1)[1].split()[1])


def computing(serve) -> bool:
    from tests.integration.helpers import metric

    return metric(serve, "kontext_batch_size", model="flux_kontext_stream") > 0


def send_in_background(serve, results, **options):
    def run():
        try:
            with KontextClient(serve.grpc_url, timeout_s=120) as client:
                results.append(client.edit(png(512, 512), "x", **{**SLOW, **options}))
        except KontextError as exc:
            results.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_sigterm_answers_requests_in_flight_and_exits_0(repository, tmp_path):
    with ServeProcess(repository, tmp_path / "serve.log", "--exit-timeout=60") as serve:
        serve.wait_ready()
        results = []
        threads = [send_in_background(serve, results, seed=i) for i in range(3)]
        assert wait_for(lambda: computing(serve), 30)
        stopped = time.monotonic()
        serve.process.send_signal(signal.SIGTERM)
        returncode = serve.process.wait(90)
        elapsed = time.monotonic() - stopped
        for thread in threads:
            thread.join(30)
    answered = [r for r in results if not isinstance(r, Exception)]
    print(f"\nSIGTERM under load: 3 requests in flight, {len(answered)} answered with images, "
          f"others {[type(r).__name__ for r in results if isinstance(r, Exception)]}; launcher exit {returncode} "
          f"after {elapsed:.1f} s")
    assert returncode == 0, serve.output()[-3000:]
    assert len(results) == 3 and answered  # nothing hung; the request being computed was answered
    assert all(isinstance(r, ServerUnavailableError) for r in results if isinstance(r, Exception))
    assert not stub_pids(repository)


def nested_json_body(depth=300_000) -> bytes:
    return b'{"inputs": ' + b"[" * depth + b"]" * depth + b"}"


def post_raw(port: int, path: str, body: bytes) -> str:
    """Sends one HTTP request on a raw socket; returns what came back ('' if the server vanished)."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        try:
            return sock.recv(4096).decode(errors="replace")
        except OSError:
            return ""


def test_a_crashed_server_is_restarted_without_orphans(repository, tmp_path):
    """Triton 2.51 dies on deeply nested JSON (a stack overflow in its parser); kontext-serve brings it back."""
    with ServeProcess(repository, tmp_path / "serve.log", "--max-restarts=2") as serve:
        serve.wait_ready()
        before = stub_pids(repository)
        crashed = time.monotonic()
        reply = post_raw(serve.http_port, "/v2/models/flux_kontext/infer", nested_json_body())
        serve.wait_ready(count=2, timeout_s=120)
        with KontextClient(serve.grpc_url) as client:
            client.generate("x", width=64, height=64, steps=1)
        recovered = time.monotonic() - crashed
        causes = [line.strip() for line in serve.lines if "restarting in" in line]
        assert serve.process.poll() is None
    print(f"\nnested JSON body ({len(nested_json_body()) // 1024} kB): reply {reply[:40]!r}; {causes}; "
          f"serving again after {recovered:.1f} s")
    assert causes and not (before & stub_pids(repository))


def test_exit_mode_reports_the_cause_and_leaves_no_stub(repository, tmp_path):
    """As in a container: tritonserver killed (the OOM killer, say) -> the launcher exits non-zero for the
    orchestrator to restart the pod, after killing the stubs the dead server orphaned."""
    with ServeProcess(repository, tmp_path / "serve.log", "--on-server-exit=exit") as serve:
        serve.wait_ready()
        stubs = stub_pids(repository)
        os.kill(triton_pid(repository), signal.SIGKILL)
        returncode = serve.process.wait(60)
    assert returncode == 1
    assert "tritonserver was killed by SIGKILL; exiting" in serve.output()
    assert stubs and not (stubs & stub_pids(repository))


def test_a_paused_stub_with_requests_in_flight_recovers(repository, tmp_path):
    """A stub stopped for 3 s (a throttled or memory-pressed host) while it computes: Triton 2.51 may abort
    on resume; either way the service comes back and no stub of the first server is left."""
    with ServeProcess(repository, tmp_path / "serve.log", "--max-restarts=2") as serve:
        serve.wait_ready()
        results = []
        thread = send_in_background(serve, results)
        assert wait_for(lambda: computing(serve), 30)
        (stub,) = stub_processes(repository)["flux_kontext_stream"]  # the pipeline's, mid-computation
        os.kill(stub, signal.SIGSTOP)
        time.sleep(3)
        os.kill(stub, signal.SIGCONT)
        paused = time.monotonic()
        thread.join(120)
        recovered = None
        with KontextClient(serve.grpc_url, timeout_s=30) as client:
            while recovered is None and time.monotonic() - paused < 120:
                try:
                    client.generate("x", width=64, height=64, steps=1)
                    recovered = time.monotonic() - paused
                except KontextError:
                    time.sleep(0.5)
        restarted = serve.ready_count() > 1
        alive = stub_pids(repository)
    print(f"\nstub paused 3 s mid-request: in-flight request -> "
          f"{type(results[0]).__name__ if results else 'no answer'}; server restarted: {restarted}; "
          f"serving after {recovered:.1f} s")
    assert results and recovered is not None
    assert not restarted or stub not in alive
