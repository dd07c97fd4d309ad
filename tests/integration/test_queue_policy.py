"""Queue policy through the real server: bounded queue, per-request queue timeout, two priorities."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from kontext_client import KontextClient, ServerUnavailableError
from kontext_triton.server.repository import write_repository
from tests.integration.conftest import running_server
from tests.integration.helpers import png

pytestmark = pytest.mark.integration
QUEUE_SIZE = 2


@pytest.fixture(scope="module")
def small_queue_server(tmp_path_factory, request):
    """One request at a time (max_batch_size 1) and room for QUEUE_SIZE more in the queue."""

    def edit(config):
        config.max_batch_size = 1
        config.dynamic_batching.default_queue_policy.max_queue_size = QUEUE_SIZE

    scratch = tmp_path_factory.mktemp("small-queue")
    repository = write_repository(scratch / "model_repository", edit=edit, models=("flux_kontext",))
    with running_server(repository, scratch, request.node) as instance:
        yield instance


def slow_edit(server, steps=20, **options):
    with KontextClient(server.grpc_url) as client:
        return client.edit(png(512, 512), "x", width=512, height=512, steps=steps, **options)


def blocker(server, steps=60):
    """A request that keeps the single instance busy for a few seconds."""
    thread = threading.Thread(target=slow_edit, args=(server, steps))
    thread.start()
    time.sleep(0.5)
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
    assert kinds.count("ok") >= 1 + QUEUE_SIZE and kinds.count("rejected") >= 1
    assert all(seconds < 2 for kind, seconds in outcomes if kind == "rejected")  # no waiting to be refused


def test_a_request_past_its_queue_timeout_is_rejected(small_queue_server):
    thread = blocker(small_queue_server)
    with pytest.raises(ServerUnavailableError, match="timeout"):
        slow_edit(small_queue_server, steps=2, queue_timeout_s=0.2)
    thread.join(60)


def test_a_high_priority_request_overtakes_a_queued_normal_one(small_queue_server):
    finished = []

    def send(name, priority):
        slow_edit(small_queue_server, steps=4, priority=priority)
        finished.append(name)

    thread = blocker(small_queue_server)
    normal = threading.Thread(target=send, args=("normal", 2))
    normal.start()
    time.sleep(0.3)
    high = threading.Thread(target=send, args=("high", 1))
    high.start()
    for t in (thread, normal, high):
        t.join(60)
    assert finished == ["high", "normal"]
