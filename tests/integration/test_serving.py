"""Edits and generations through the real tritonserver, over gRPC and HTTP."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from tests.integration.helpers import client_for, infer, png

pytestmark = pytest.mark.integration


def test_server_and_model_are_ready(server):
    for protocol in ("grpc", "http"):
        _, client = client_for(server, protocol)
        assert client.is_server_ready() and client.is_model_ready("flux_kontext")


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("fmt, pil_format", [("png", "PNG"), ("jpeg", "JPEG"), ("webp", "WEBP")])
def test_edit_returns_requested_size_and_format(server, protocol, fmt, pil_format):
    image, meta = infer(
        server, protocol, prompt=b"make it snowy", image=png(200, 120), width=128, height=80, steps=2,
        output_format=fmt.encode(),
    )
    assert image.format == pil_format
    assert image.size == (128, 80)
    assert meta["mode"] == "edit" and meta["steps"] == 2


def test_edit_without_size_keeps_input_size(server):
    image, _ = infer(server, prompt=b"x", image=png(160, 96), steps=1)
    assert image.size == (160, 96)


def test_text_to_image_without_image(server):
    image, meta = infer(server, prompt=b"a lighthouse", width=96, height=64, steps=2)
    assert image.size == (96, 64) and meta["mode"] == "text-to-image"


def test_same_seed_same_image(server):
    first, meta = infer(server, prompt=b"x", image=png(), seed=1234, steps=2)
    second, _ = infer(server, "http", prompt=b"x", image=png(), seed=1234, steps=2)
    other, _ = infer(server, prompt=b"x", image=png(), seed=4321, steps=2)
    assert meta["seed"] == 1234
    assert np.array_equal(np.asarray(first), np.asarray(second))
    assert not np.array_equal(np.asarray(first), np.asarray(other))


def test_concurrent_requests_are_batched_and_each_gets_its_own_answer(server):
    seeds = list(range(100, 112))
    with ThreadPoolExecutor(len(seeds)) as pool:
        results = list(pool.map(lambda s: infer(server, prompt=b"x", image=png(), seed=s, steps=4), seeds))
    assert [meta["seed"] for _, meta in results] == seeds
    assert max(meta["batch_size"] for _, meta in results) > 1
    # each answer is that seed's image: compare with a request served alone
    alone, _ = infer(server, prompt=b"x", image=png(), seed=105, steps=4)
    assert np.abs(np.asarray(alone, dtype=np.int16) - np.asarray(results[5][0], dtype=np.int16)).max() <= 2
