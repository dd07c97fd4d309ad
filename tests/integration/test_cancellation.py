"""A cancelled or timed-out request stops denoising within one step and frees its slot."""

import asyncio
import threading
import time

import pytest
from tritonclient.utils import InferenceServerException

from kontext_client import AsyncKontextClient, KontextClient, RequestTimeoutError
from tests.integration.helpers import infer, metric, png, wait_for

pytestmark = pytest.mark.integration
UNARY = "flux_kontext"
PIPELINE = "flux_kontext_stream"  # holds the pipeline; per-pipeline series (steps, batch size) carry its name
SLOW = dict(width=512, height=512, steps=100)  # several seconds on the CPU


def cancelled(server):
    return metric(server, "kontext_requests_total", model=UNARY, outcome="cancelled")


def steps_run(server):
    return metric(server, "kontext_step_duration_seconds_count", model=PIPELINE)


def computing(server) -> bool:
    return metric(server, "kontext_batch_size", model=PIPELINE) > 0


def test_client_timeout_stops_denoising_early_and_frees_the_instance(server):
    before, steps_before = cancelled(server), steps_run(server)
    with KontextClient(server.grpc_url, timeout_s=1.0) as client, pytest.raises(RequestTimeoutError):
        client.edit(png(512, 512), "x", **SLOW)
    assert wait_for(lambda: cancelled(server) == before + 1)
    assert steps_run(server) - steps_before < SLOW["steps"]  # stopped, did not run to the end
    started = time.monotonic()
    with KontextClient(server.grpc_url) as client:
        client.generate("x", width=64, height=64, steps=1)
    assert time.monotonic() - started < 3


def test_a_cancelled_unary_request_stops_within_a_step_of_the_cancel(server):
    """A unary request is forwarded to the pipeline model, which BLS cannot cancel in Triton 2.51: the
    front's marker must stop it as fast as a request of the pipeline model's own is stopped. A gRPC
    deadline ends the call at the client and sets no server-side limit, so only the marker can stop it."""
    before, steps_before = cancelled(server), steps_run(server)
    with pytest.raises(InferenceServerException, match="Deadline"):  # 1024x1024: steps longer than the 50 ms poll
        infer(server, prompt=b"x", image=png(1024, 1024), width=1024, height=1024, steps=100,
              infer_options={"client_timeout": 3.0})
    at_cancel = steps_run(server)
    assert wait_for(lambda: cancelled(server) == before + 1, 10)
    after = steps_run(server) - at_cancel
    print(f"\nunary request cancelled by its client after {at_cancel - steps_before:.0f} steps: "
          f"{after:.0f} step(s) ended after the cancel")
    assert at_cancel > steps_before  # it was computing when its client left
    assert after <= 2  # the step running when the cancel arrived, and at most one begun before the marker


def test_cancelling_an_asyncio_task_cancels_the_server_work(server):
    before = cancelled(server)

    async def run():
        async with AsyncKontextClient(server.grpc_url) as client:
            task = asyncio.create_task(client.edit(png(512, 512), "x", **SLOW))
            while not computing(server):  # cancel once the server is computing it
                await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert wait_for(lambda: cancelled(server) == before + 1)


def test_cancelling_one_request_leaves_the_others(server):
    """Two requests share a batch; one client gives up: it gets CANCELLED, the other its full result."""
    results = {}
    before = cancelled(server)

    def send(name, timeout_s, seed, steps):
        with KontextClient(server.grpc_url, timeout_s=timeout_s) as client:
            try:
                results[name] = client.edit(png(512, 512), "x", width=512, height=512, steps=steps, seed=seed)
            except RequestTimeoutError as exc:
                results[name] = exc

    threads = [threading.Thread(target=send, args=("blocker", 300, 0, 20))]
    threads[0].start()
    assert wait_for(lambda: computing(server), 30)  # the next two queue behind it and share a batch
    threads += [threading.Thread(target=send, args=("live", 300, 1, 100)),
                threading.Thread(target=send, args=("gone", 3.0, 2, 100))]
    for thread in threads[1:]:
        thread.start()
    for thread in threads:
        thread.join(320)
    assert isinstance(results["gone"], RequestTimeoutError)
    assert not isinstance(results["live"], Exception), results["live"]
    live = results["live"].metadata
    assert live["seed"] == 1 and live["steps"] == 100 and live["batch_size"] == 2  # it shared a batch and ran on
    assert wait_for(lambda: cancelled(server) == before + 1)  # the server answered the other CANCELLED
