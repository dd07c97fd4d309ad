"""A context-parallel worker that dies or hangs is reported to rank 0 within a bounded time, and the
group leaves no process behind. (Its own module: one process holds one group at a time.)"""

import os
import signal
import threading
import time

import pytest
import torch

from kontext_engine import GroupBroken, KontextEngine
from kontext_engine.context_parallel import HEARTBEAT_INTERVAL_S, HEARTBEAT_TIMEOUT_S
from kontext_engine.settings import EngineSettings
from tests.unit.test_context_parallel import CPU, request


class Failures:
    def __init__(self):
        self.messages, self.seen = [], threading.Event()

    def __call__(self, message):
        self.messages.append(message)
        self.seen.set()


@pytest.mark.parametrize("how", ["killed", "stopped"])
def test_a_worker_that_dies_or_hangs_is_reported_and_cleaned_up(how):
    failures = Failures()
    engine = KontextEngine.load(EngineSettings(context_parallel=2), CPU, worker_devices=[CPU],
                                on_group_failure=failures)
    (worker,) = engine.group._workers
    try:
        engine.run([request()])
        os.kill(worker.pid, signal.SIGKILL if how == "killed" else signal.SIGSTOP)
        limit = 3 * HEARTBEAT_INTERVAL_S if how == "killed" else HEARTBEAT_TIMEOUT_S + 3 * HEARTBEAT_INTERVAL_S
        assert failures.seen.wait(limit), f"no failure reported within {limit} s"
        (message,) = failures.messages
        assert ("rank 1 (cpu) exited with code -9" if how == "killed" else "rank 1 sent no heartbeat") in message
    finally:
        started = time.monotonic()
        engine.close()
        assert time.monotonic() - started < 10
    assert worker.poll() is not None  # no orphan


def test_a_failure_on_rank_0_alone_breaks_the_group_cleanly():
    """The worker already ran the step rank 0 failed in: the two can never be in step again, so the call
    ends in GroupBroken, the group reports itself broken and its worker is gone (no later call pairs
    with a stale collective)."""
    failures = Failures()
    engine = KontextEngine.load(EngineSettings(context_parallel=2), CPU, worker_devices=[CPU],
                                on_group_failure=failures)
    (worker,) = engine.group._workers

    def progress_hook_that_breaks(done, total):
        raise RuntimeError("a progress hook failed on rank 0 only")

    try:
        with pytest.raises(GroupBroken, match="rank 0 failed"):
            engine.generate([request(steps=6)], on_step=progress_hook_that_breaks)
        assert failures.messages == ["rank 0 failed (RuntimeError)"]
        assert worker.poll() is not None
        with pytest.raises(GroupBroken):  # and the next call says so at once, rather than hang
            engine.generate([request()])
    finally:
        engine.close()
