"""A cancelled or timed-out request stops denoising within one step and frees its slot."""

import asyncio
import threading
import time

import pytest

from kontext_client import AsyncKontextClient, KontextClient, RequestTimeoutError
from tests.integration.helpers import metric, png, wait_for

pytestmark = pytest.mark.integration
UNARY = "flux_kontext"
SLOW = dict(width=512, height=512, steps=100)  # several seconds on the CPU


def cancelled(server):
    return metric(server, "kontext_requests_total", model=UNARY, outcome="cancelled")


def steps_run(server):
    return metric(server, "kontext_step_duration_seconds_count", model=UNARY)


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


def test_cancelling_an_asyncio_task_cancels_the_server_work(server):
    before = cancelled(server)

    async def run():
        async with AsyncKontextClient(server.grpc_url) as client:
            task = asyncio.create_task(client.edit(png(512, 512), "x", **SLOW))
            await asyncio.sleep(1.0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(run())
    assert wait_for(lambda: cancelled(server) == before + 1)


def test_cancelling_one_request_leaves_the_others(server):
    results = {}

    def live():
        with KontextClient(server.grpc_url) as client:
            results["live"] = client.edit(png(512, 512), "x", width=512, height=512, steps=40, seed=1)

    thread = threading.Thread(target=live)
    thread.start()
    with KontextClient(server.grpc_url, timeout_s=0.8) as client, pytest.raises(RequestTimeoutError):
        client.edit(png(512, 512), "x", width=512, height=512, steps=40, seed=2)
    thread.join(60)
    assert results["live"].metadata["seed"] == 1 and results["live"].metadata["steps"] == 40
