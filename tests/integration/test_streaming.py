"""The decoupled flux_kontext_stream model: progress events, then the image; early exit cancels."""

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from kontext_client import AsyncKontextClient, EditResult, InvalidRequestError, KontextClient, Progress
from tests.integration.helpers import metric, png, wait_for

pytestmark = pytest.mark.integration
STREAM = "flux_kontext_stream"


def test_stream_yields_every_step_then_the_result(server):
    with KontextClient(server.grpc_url) as client:
        events = list(client.stream_edit(png(), "make it snowy", steps=5, width=96, height=64, seed=3))
    progress, result = events[:-1], events[-1]
    assert all(isinstance(e, Progress) for e in progress)
    assert [(e.step, e.steps) for e in progress] == [(k, 5) for k in range(1, 6)]
    assert progress[-1].eta_s == 0 and all(e.elapsed_s >= 0 for e in progress)
    assert isinstance(result, EditResult) and result.image.size == (96, 64) and result.metadata["seed"] == 3


def test_stream_and_unary_give_the_same_image_for_a_seed(server):
    with KontextClient(server.grpc_url) as client:
        *_, streamed = client.stream_edit(png(), "x", steps=3, seed=77)
        unary = client.edit(png(), "x", steps=3, seed=77)
    assert np.array_equal(np.asarray(streamed.image), np.asarray(unary.image))


def test_stream_reports_invalid_input_naming_the_field(server):
    with KontextClient(server.grpc_url) as client, pytest.raises(InvalidRequestError, match="'width'"):
        list(client.stream_generate("x", width=65, height=64, steps=1))


def test_leaving_the_stream_early_cancels_the_server_work(server):
    before = metric(server, "kontext_requests_total", model=STREAM, outcome="cancelled")
    with KontextClient(server.grpc_url) as client:
        events = client.stream_edit(png(512, 512), "x", steps=100, width=512, height=512)
        assert isinstance(next(events), Progress)
        events.close()  # the consumer goes away after the first step
        assert wait_for(lambda: metric(server, "kontext_requests_total", model=STREAM, outcome="cancelled") == before + 1)
        started = time.monotonic()
        *_, result = client.stream_generate("x", width=64, height=64, steps=1)  # the instance is free again
    assert isinstance(result, EditResult) and time.monotonic() - started < 5


def test_async_stream_yields_progress_then_result_and_early_exit_cancels(server):
    async def run():
        async with AsyncKontextClient(server.grpc_url) as client:
            events = [e async for e in client.stream_generate("x", width=64, height=64, steps=3, seed=5)]
            before = metric(server, "kontext_requests_total", model=STREAM, outcome="cancelled")
            async for event in client.stream_edit(png(512, 512), "x", steps=100, width=512, height=512):
                assert isinstance(event, Progress)
                break  # leaving the loop cancels the server's work
            return events, before

    events, before = asyncio.run(run())
    assert [e.step for e in events[:-1]] == [1, 2, 3] and events[-1].metadata["seed"] == 5
    assert wait_for(lambda: metric(server, "kontext_requests_total", model=STREAM, outcome="cancelled") == before + 1)


def test_each_streamed_request_is_answered_as_soon_as_its_outcome_is_known(server):
    """An invalid request handed to the model in one execute() with a slow valid one is answered at once,
    not when the valid one's denoising ends."""
    finished = {}

    def stream(name, **options):
        with KontextClient(server.grpc_url) as client:
            try:
                for _ in client.stream_edit(png(512, 512), "x", width=512, height=512, **options):
                    pass
            except InvalidRequestError:
                pass
        finished[name] = time.monotonic()

    with ThreadPoolExecutor(3) as pool:
        blocker = pool.submit(stream, "blocker", steps=20)
        assert wait_for(lambda: metric(server, "kontext_batch_size", model=STREAM) > 0, 30)
        slow = pool.submit(stream, "slow", steps=60)
        invalid = pool.submit(stream, "invalid", steps=0)
        for future in (blocker, slow, invalid):
            future.result()
    assert finished["invalid"] < finished["slow"] - 1.0
