"""Context parallelism on CPUs: two processes (gloo) run one edit in lockstep, as GPUs do over NCCL.

What only a GPU run covers: NCCL, the cuDNN attention backend, FP8 blocks across ranks, timings
(perf/results/h100x2_context_parallel.json). Compiled blocks across ranks: test_context_parallel_lifecycle.py.
"""

import dataclasses
import io
import types

import numpy as np
import pytest
import torch
from PIL import Image

from kontext_engine import Cancelled, EditRequest, InvalidRequest, KontextEngine
from kontext_engine.settings import EngineSettings

CPU = torch.device("cpu")


def request(seed=1, edit=True, size=64, steps=4, **changes) -> EditRequest:
    image = Image.new("RGB", (size, size), (200, 40 + seed, 10)) if edit else None
    return dataclasses.replace(EditRequest("make it snowy", image, seed, steps, 2.5, size, size, "png"), **changes)


def pixels(result) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(result.image)), dtype=np.int16)


@pytest.fixture(scope="module")
def one_rank():
    return KontextEngine.load(EngineSettings(), CPU, max_batch_size=2)


@pytest.fixture(scope="module")
def two_ranks():
    engine = KontextEngine.load(EngineSettings(context_parallel=2), CPU, max_batch_size=2, worker_devices=[CPU])
    yield engine
    engine.close()


def test_two_ranks_render_what_one_renders_batches_and_modes_mixed(one_rank, two_ranks):
    batch = [request(seed=1), request(seed=2), request(seed=3, edit=False)]  # an edit pair, then text-to-image
    expected = one_rank.run(batch)
    got = two_ranks.run(batch)
    assert [r.metadata["batch_size"] for r in got] == [2, 2, 1]
    for mine, reference in zip(got, expected):
        assert np.abs(pixels(mine) - pixels(reference)).max() <= 2  # the tested determinism bound


def test_first_block_cache_takes_the_same_decision_on_every_rank(one_rank, two_ranks):
    cached = request(steps=8, cache_threshold=0.3)
    (reference,), (mine,) = one_rank.run([cached]), two_ranks.run([cached])
    computed = mine.metadata["steps_computed"]
    assert 1 < computed < 8  # steps were skipped: the cached path ran, and no rank waited on another
    assert computed == reference.metadata["steps_computed"]
    assert np.abs(pixels(mine) - pixels(reference)).max() <= 2


def test_a_cancel_stops_every_rank_at_the_same_step(one_rank, two_ranks):
    asked = []

    def stop_after_two_steps():
        asked.append(1)
        return len(asked) > 2

    with pytest.raises(Cancelled, match="after step 2 of 20"):
        two_ranks.generate([request(steps=20)], should_stop=stop_after_two_steps)
    # Had the worker run on, the next call's collectives would pair with its stale ones.
    (after,) = two_ranks.run([request(seed=5)])
    (reference,) = one_rank.run([request(seed=5)])
    assert np.abs(pixels(after) - pixels(reference)).max() <= 2


def test_a_size_that_does_not_split_over_the_ranks_is_invalid_and_harms_no_neighbour(two_ranks):
    odd = request(edit=False, size=48)  # 3x3 = 9 image tokens: not divisible by 2
    bad, good = two_ranks.run([odd, request(seed=6)])
    assert isinstance(bad, InvalidRequest) and bad.field == "width" and "multiples of 32" in str(bad)
    assert good.metadata["steps"] == 4


def test_a_worker_saves_the_artifacts_of_its_own_device_when_rank_0_says_so(monkeypatch, tmp_path):
    """Compiled code is per device: rank 0 saves its own after warm-up, then tells each worker to."""
    import kontext_engine.engine as engine_module

    saved = []
    monkeypatch.setattr(engine_module, "save_compile_artifacts", lambda path, loaded, retraced=False: saved.append(path) or 1)
    messages = iter([("save_artifacts",), ("stop",)])
    group = types.SimpleNamespace(rank=1, share=lambda _: next(messages))
    settings = EngineSettings(compile="regional", compile_cache_dir=str(tmp_path))
    worker = KontextEngine(KontextEngine.load(EngineSettings(), CPU).pipeline, CPU, settings, group=group)
    worker.follow(tmp_path)
    assert saved == [worker.compile_artifacts(tmp_path)]

