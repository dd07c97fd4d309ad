"""A context-parallel group over its life: every rank saves its compile artifacts after the warm-up,
and an idle group stays in step however long it waits. (Its own module: one process holds one group at a
time.)"""

import re
import time

from kontext_engine import KontextEngine
from kontext_engine.settings import EngineSettings
from tests.unit.test_context_parallel import CPU, request


def test_after_the_warm_up_every_rank_saves_its_artifacts_and_the_group_stays_in_step(tmp_path, capfd):
    settings = EngineSettings(context_parallel=2, compile="regional", warmup_shapes="64x64:edit", warmup_steps=1,
                              compile_cache_dir=str(tmp_path))
    engine = KontextEngine.load(settings, CPU, max_batch_size=1, worker_devices=[CPU])
    try:
        (result,) = engine.run([request(seed=5)])
    finally:
        engine.close()
    assert result.metadata["steps_computed"] == 4
    saved = re.search(r"context-parallel rank 1 INFO kontext_engine.engine: compile artifacts saved: (\d+) bytes",
                      capfd.readouterr().err)
    assert saved and int(saved.group(1)) > 0  # the worker's own compiled blocks


def test_an_idle_group_outlives_the_collective_timeout(monkeypatch):
    """Workers wait for the next batch on the control channel however long the instance idles."""
    monkeypatch.setenv("KONTEXT_COLLECTIVE_TIMEOUT_S", "8")  # the workers inherit it
    engine = KontextEngine.load(EngineSettings(context_parallel=2), CPU, max_batch_size=1, worker_devices=[CPU])
    try:
        engine.run([request(seed=6, steps=1)])
        time.sleep(10)  # idle past the collective timeout
        (result,) = engine.run([request(seed=6, steps=1)])
    finally:
        engine.close()
    assert not isinstance(result, Exception), result
