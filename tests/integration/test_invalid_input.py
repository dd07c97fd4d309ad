"""Every bad input gets INVALID_ARG naming the field; other requests are unaffected."""

import io
import math
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from PIL import Image
from tritonclient.utils import InferenceServerException

from tests.integration.helpers import infer, png
from tests.unit.test_image_metadata_fuzz import png_with_chunk

pytestmark = pytest.mark.integration


def bomb():
    buffer = io.BytesIO()
    Image.new("1", (5000, 4000)).save(buffer, format="PNG")  # 20 Mpx in a few kB
    return buffer.getvalue()


def truncated():
    buffer = io.BytesIO()
    Image.effect_noise((256, 256), 50).convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()[:2000]


BAD_REQUESTS = {
    "missing prompt": ("prompt", {"image": png()}),
    "empty prompt": ("prompt", {"prompt": b""}),
    "undecodable image": ("image", {"prompt": b"x", "image": b"definitely not a png"}),
    "truncated image": ("image", {"prompt": b"x", "image": truncated()}),
    "decompression bomb": ("image", {"prompt": b"x", "image": bomb()}),
    "width not a multiple of 16": ("width", {"prompt": b"x", "width": 100, "height": 64}),
    "width too large": ("width", {"prompt": b"x", "width": 8192, "height": 64}),
    "height alone": ("width", {"prompt": b"x", "height": 64}),
    "zero steps": ("steps", {"prompt": b"x", "steps": 0}),
    "too many steps": ("steps", {"prompt": b"x", "steps": 10_000}),
    "NaN guidance": ("guidance", {"prompt": b"x", "guidance": math.nan}),
    "negative seed": ("seed", {"prompt": b"x", "seed": -5}),
    "unknown format": ("output_format", {"prompt": b"x", "output_format": b"bmp"}),
    "empty format": ("output_format", {"prompt": b"x", "output_format": b""}),
}


@pytest.mark.parametrize("protocol", ["grpc", "http"])
@pytest.mark.parametrize("case", sorted(BAD_REQUESTS))
def test_bad_input_is_invalid_arg_naming_the_field(server, protocol, case):
    field, values = BAD_REQUESTS[case]
    with pytest.raises(InferenceServerException) as info:
        infer(server, protocol, **{"steps": 1, **values})
    assert info.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
    assert f"'{field}'" in info.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_wrong_dtype_is_rejected_naming_the_field(server, protocol):
    with pytest.raises(InferenceServerException) as info:
        infer(server, protocol, dtypes={"steps": "FP32"}, prompt=b"x", steps=np.array([[2.0]], dtype=np.float32))
    assert info.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
    assert "steps" in info.value.message()


def test_bad_requests_in_a_batch_do_not_affect_good_ones(server):
    def send(i):
        if i % 2:
            try:
                infer(server, prompt=b"x", image=b"garbage", seed=i, steps=3)
            except InferenceServerException as exc:
                return exc.status()
            return "unexpected success"
        _, meta = infer(server, prompt=b"x", image=png(), seed=i, steps=3)
        return meta["seed"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(8)))
    assert outcomes == [0, "StatusCode.INVALID_ARGUMENT", 2, "StatusCode.INVALID_ARGUMENT",
                        4, "StatusCode.INVALID_ARGUMENT", 6, "StatusCode.INVALID_ARGUMENT"]


def test_server_still_serves_after_bad_input(server):
    for _, values in BAD_REQUESTS.values():
        with pytest.raises(InferenceServerException):
            infer(server, **{"steps": 1, **values})
    image, _ = infer(server, prompt=b"x", image=png(), width=64, height=64, steps=1)
    assert image.size == (64, 64)


def test_a_broken_exif_block_neither_fails_its_batch_nor_its_own_request(server):
    """Reproduced: a PNG eXIf chunk of GARBAGEGARBAGE raised SyntaxError outside the decode guard, so every
    request batched with it got INTERNAL with a traceback. Now its pixels are used and EXIF ignored."""
    broken = png_with_chunk(b"eXIf", b"GARBAGEGARBAGE", size=(96, 64))

    def send(i):
        image = broken if i % 2 else png()
        _, meta = infer(server, prompt=b"x", image=image, seed=i, steps=3)
        return meta["seed"], meta["batch_size"]

    with ThreadPoolExecutor(8) as pool:
        outcomes = list(pool.map(send, range(8)))
    assert [seed for seed, _ in outcomes] == list(range(8))
    assert max(batch for _, batch in outcomes) > 1  # they did share batches

