"""Capacity goes to live requests: one bounded queue whatever priority a client claims, a per-request
time limit that rejects queued requests and stops running ones, abandoned HTTP requests stopped."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from kontext_client import KontextClient, ServerUnavailableError
from kontext_triton.server.repository import write_repository
from tests.integration.conftest import SMALL_QUEUE_SIZE, running_server
from tests.integration.helpers import infer, metric, png, wait_for

pytestmark = pytest.mark.integration



@pytest.fixture(scope="module")
def short_limit_server(tmp_path_factory, request):
    """One request at a time, and at most 2 s of compute each."""

    def edit(config):
        config.max_batch_size = 1

    scratch = tmp_path_factory.mktemp("short-limit")
    repository = write_repository(scratch / "model_repository", {"request_timeout_s": "2"}, edit=edit)
    with running_server(repository, scratch, request.node) as instance:
        yield instance


def slow_edit(server, steps=20, **options):
    with KontextClient(server.grpc_url) as client:
        return client.edit(png(512, 512), "x", width=512, height=512, steps=steps, **options)


def blocker(server, steps=60):
    """A request that keeps the single instance busy for a few seconds; returns once it is computing."""
    thread = threading.Thread(target=slow_edit, args=(server, steps))
    thread.start()
    assert wait_for(lambda: metric(server, "kontext_batch_size", model="flux_kontext_stream") > 0, 30)
    return thread


def test_a_full_queue_rejects_at_once_with_unavailable(small_queue_server):
    def send(_):
        started = time.monotonic()
        try:
            slow_edit(small_queue_server)
            return "ok", time.monotonic() - started
        except ServerUnavailableError as exc:
            assert "exceeds maximum queue size" in str(exc).lower()
            return "rejected", time.monotonic() - started

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(8)))
    kinds = [kind for kind, _ in outcomes]
    assert kinds.count("ok") >= 1 + SMALL_QUEUE_SIZE and kinds.count("rejected") >= 1
    assert all(seconds < 2 for kind, seconds in outcomes if kind == "rejected")  # no waiting to be refused


def test_a_request_past_its_time_limit_in_the_queue_is_rejected(small_queue_server):
    thread = blocker(small_queue_server)
    with pytest.raises(ServerUnavailableError, match="timeout"):
        slow_edit(small_queue_server, steps=2, time_limit_s=0.2)
    thread.join(60)


def test_claiming_a_high_priority_gets_no_second_queue(small_queue_server):
    """Triton bounds each priority level separately; with one level, priority 1 joins the same bounded queue."""
    thread = blocker(small_queue_server)

    def send(priority):
        try:
            infer(small_queue_server, prompt=b"x", image=png(64, 64), width=64, height=64, steps=2,
                  infer_options={"priority": priority})
            return "ok"
        except InferenceServerException as exc:
            assert "exceeds maximum queue size" in exc.message().lower()
            return "rejected"

    with ThreadPoolExecutor(6) as pool:
        outcomes = list(pool.map(send, [2, 2, 1, 1, 1, 1]))
    thread.join(60)
    assert outcomes.count("ok") == SMALL_QUEUE_SIZE and outcomes.count("rejected") == 6 - SMALL_QUEUE_SIZE


def steps_run(server):
    return metric(server, "kontext_step_duration_seconds_count", model="flux_kontext_stream")


def test_a_running_request_past_its_time_limit_is_stopped(small_queue_server):
    steps_before, expired_before = steps_run(small_queue_server), expired(small_queue_server)
    started = time.monotonic()
    with pytest.raises(ServerUnavailableError, match="time limit of 1 s"):
        slow_edit(small_queue_server, steps=100, time_limit_s=1.0)
    assert time.monotonic() - started < 10
    assert expired(small_queue_server) == expired_before + 1
    assert steps_run(small_queue_server) - steps_before < 100  # compute stopped, not run to the end


def expired(server):
    return metric(server, "kontext_requests_total", model="flux_kontext", outcome="expired")


def test_abandoned_http_requests_stop_at_the_servers_limit(short_limit_server):
    """An HTTP client that gives up is invisible to Triton 2.51; the server's own limit
    (request_timeout_s) stops what it abandoned, so the next caller is served."""
    server = short_limit_server
    before = expired(server)

    def abandon(_):
        client = httpclient.InferenceServerClient(server.http_url, network_timeout=0.5)
        with pytest.raises(Exception):
            infer(server, protocol="http", client=client, prompt=b"x", image=png(1024, 1024), width=1024,
                  height=1024, steps=100)

    with ThreadPoolExecutor(3) as pool:
        list(pool.map(abandon, range(3)))
    started = time.monotonic()
    image, _ = infer(server, prompt=b"x", width=64, height=64, steps=1)
    waited = time.monotonic() - started
    assert wait_for(lambda: expired(server) == before + 3, 30)
    print(f"\nabandoned HTTP requests: 3 stopped at the 2 s limit; the next request waited {waited:.1f} s")
    assert waited < 3 * 2 + 4  # three limits at most, not three 100-step runs at 1024x1024 (~15 s each)
