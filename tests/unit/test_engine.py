"""The engine on the embedded tiny model: sizes, determinism, batching, step hook, isolation."""

import io

import numpy as np
import pytest
from PIL import Image

from kontext_engine import Cancelled, EditRequest, KontextEngine
from kontext_engine.codecs import fit_to_size


@pytest.fixture(scope="module")
def engine(kontext_cache_dir):
    return KontextEngine.load(max_batch_size=4)


def request(seed=1, width=64, height=48, steps=2, image=True, fmt="png", prompt="make it snowy"):
    source = Image.new("RGB", (80, 80), (200, 40, 40)) if image else None
    return EditRequest(
        prompt=prompt,
        image=fit_to_size(source, width, height) if image else None,
        seed=seed,
        steps=steps,
        guidance=2.5,
        width=width,
        height=height,
        output_format=fmt,
    )


def pixels(result):
    return np.asarray(Image.open(io.BytesIO(result.image)).convert("RGB"), dtype=np.int16)


@pytest.mark.parametrize("width, height", [(64, 48), (128, 64), (80, 144)])
def test_output_has_the_requested_size(engine, width, height):
    (result,) = engine.run([request(width=width, height=height)])
    assert Image.open(io.BytesIO(result.image)).size == (width, height)
    assert (result.metadata["width"], result.metadata["height"]) == (width, height)


def test_text_to_image(engine):
    (result,) = engine.run([request(image=False, fmt="jpeg")])
    assert Image.open(io.BytesIO(result.image)).format == "JPEG"
    assert result.metadata["mode"] == "text-to-image"


def test_same_seed_same_image_other_seed_other_image(engine):
    first, second, other = (engine.run([request(seed=s)])[0] for s in (7, 7, 8))
    assert np.array_equal(pixels(first), pixels(second))
    assert not np.array_equal(pixels(first), pixels(other))


def test_batched_requests_match_single_runs(engine):
    batch = engine.run([request(seed=s) for s in (11, 12, 13)])
    assert [r.metadata["batch_size"] for r in batch] == [3, 3, 3]
    assert [r.metadata["seed"] for r in batch] == [11, 12, 13]
    for seed, batched in zip((11, 12, 13), batch):
        (single,) = engine.run([request(seed=seed)])
        difference = np.abs(pixels(batched) - pixels(single))
        # float32 rounding differs across batch shapes (other GEMM blockings): the README's guarantee
        assert difference.max() <= 2 and np.count_nonzero(difference) / difference.size < 0.01


def test_incompatible_requests_run_in_separate_batches_in_order(engine):
    results = engine.run([request(seed=1), request(seed=2, steps=3), request(seed=3), request(image=False)])
    assert [r.metadata["seed"] for r in results] == [1, 2, 3, 1]
    assert [r.metadata["batch_size"] for r in results] == [2, 1, 2, 1]
    assert [r.metadata["steps"] for r in results] == [2, 3, 2, 2]


def test_step_hook_sees_every_step_with_the_batch_members(engine):
    seen = []
    engine.run([request(steps=3), request(steps=2), request(steps=3)],
               on_step=lambda indices, done, total: seen.append((list(indices), done, total)))
    assert seen == [([0, 2], 1, 3), ([0, 2], 2, 3), ([0, 2], 3, 3), ([1], 1, 2), ([1], 2, 2)]


def test_a_fully_cancelled_batch_stops_within_one_step(engine):
    steps_seen = []
    cancelled = set()

    def on_step(indices, done, total):
        steps_seen.append(done)
        if done == 2:
            cancelled.update(indices)  # the client goes away during step 3

    (outcome,) = engine.run([request(steps=8)], on_step=on_step, is_cancelled=cancelled.__contains__)
    assert isinstance(outcome, Cancelled)
    assert steps_seen == [1, 2]


def test_a_partly_cancelled_batch_runs_on_for_the_live_request(engine):
    live, gone = engine.run([request(seed=1, steps=3), request(seed=2, steps=3)], is_cancelled={1}.__contains__)
    assert live.metadata["steps"] == 3 and gone.metadata["seed"] == 2  # model.py answers CANCELLED for it


def test_a_request_cancelled_while_queued_never_runs(engine):
    calls = []
    (outcome,) = engine.run([request()], on_step=lambda *a: calls.append(a), is_cancelled=lambda index: True)
    assert isinstance(outcome, Cancelled) and calls == []


def test_a_failing_batch_does_not_affect_others(engine, monkeypatch):
    real_generate = engine.generate

    def generate(batch, on_step=None, should_stop=None):
        if batch[0].steps == 3:
            raise RuntimeError("simulated out of memory")
        return real_generate(batch, on_step, should_stop)

    monkeypatch.setattr(engine, "generate", generate)
    good, bad = engine.run([request(steps=2), request(steps=3)])
    assert good.metadata["steps"] == 2
    assert isinstance(bad, RuntimeError)
