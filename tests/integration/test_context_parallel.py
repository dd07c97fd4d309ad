"""An instance that owns two devices (context_parallel=2) behind a real tritonserver, on CPUs over gloo:
the stub starts its worker, serves both protocols, refuses sizes that do not split, and when the
worker is killed mid-request the client gets a clear UNAVAILABLE at once, the instance comes back
(the watchdog reloads it) with a new worker, and no process is left behind."""

import os
import signal
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from kontext_triton.server.repository import write_repository
from tests.integration.conftest import running_server
from tests.integration.helpers import infer, png, wait_for

pytestmark = pytest.mark.integration
WORKER_MODULE = "kontext_engine.parallel_worker"


def workers() -> list[int]:
    """PIDs of context-parallel worker processes on this machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if WORKER_MODULE in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode():
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def two_rank_server(tmp_path_factory, request):
    scratch = tmp_path_factory.mktemp("context-parallel")
    repository = write_repository(scratch / "model_repository", parameters={"context_parallel": "2"})
    with running_server(repository, scratch, request.node) as server:
        yield server
    assert wait_for(lambda: not workers(), timeout_s=30), f"workers outlived the server: {workers()}"


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_an_edit_runs_across_two_ranks(two_rank_server, protocol):
    assert len(workers()) == 1  # rank 0 is the stub itself
    image, metadata = infer(two_rank_server, protocol, image=png(64, 64), prompt="make it snowy", seed=1,
                            steps=3, width=64, height=64)
    assert image.size == (64, 64) and metadata["steps_computed"] == 3


def test_a_size_that_does_not_split_is_invalid_arg_naming_width(two_rank_server):
    with pytest.raises(InferenceServerException) as caught:
        infer(two_rank_server, prompt="x", steps=2, width=48, height=48)  # 9 image tokens over 2 ranks
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT" and "'width'" in caught.value.message()
    infer(two_rank_server, prompt="x", steps=2, width=64, height=64)  # the group is still in step


def test_a_killed_worker_fails_the_request_clearly_and_the_instance_comes_back(two_rank_server):
    (worker,) = workers()
    outcome = {}

    def slow_edit():
        started = time.monotonic()
        try:
            infer(two_rank_server, image=png(512, 512), prompt="x", steps=100, width=512, height=512)
        except InferenceServerException as exc:
            outcome["error"] = exc
        outcome["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=slow_edit)
    thread.start()
    time.sleep(3)  # the request is denoising on both ranks
    killed_at = time.monotonic()
    os.kill(worker, signal.SIGKILL)
    thread.join(60)
    assert not thread.is_alive(), "the request was left waiting"
    error = outcome["error"]
    assert error.status() == "StatusCode.UNAVAILABLE", error
    assert "context-parallel group failed (worker rank 1 (cpu) exited with code -9)" in error.message()
    assert time.monotonic() - killed_at < 15

    def serving_again() -> bool:
        try:
            infer(two_rank_server, image=png(64, 64), prompt="x", steps=2, width=64, height=64)
            return True
        except InferenceServerException:
            return False

    assert wait_for(serving_again, timeout_s=120, interval_s=1.0)
    (new_worker,) = workers()
    assert new_worker != worker
