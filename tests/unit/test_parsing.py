import math

import numpy as np
import pytest

from kontext_engine import InvalidRequest, contract, parse_request
from tests.conftest import png_bytes


def tensors(**values):
    """Arrays shaped as model.py receives them ([1, 1]: batch dim, one element); None drops a field."""
    dtypes = {"BYTES": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}
    specs = {s.name: s for s in contract.INPUTS}
    out = {}
    for name, value in values.items():
        if value is None:
            continue
        out[name] = value if isinstance(value, np.ndarray) else np.array([[value]], dtype=dtypes[specs[name].dtype])
    return out


def test_defaults_for_text_to_image():
    request = parse_request(tensors(prompt=b"a red barn"))
    assert (request.width, request.height) == (contract.DEFAULT_TEXT_TO_IMAGE_SIZE,) * 2
    assert request.steps == contract.DEFAULT_STEPS
    assert request.guidance == contract.DEFAULT_GUIDANCE
    assert request.output_format == "png"
    assert request.image is None
    assert 0 <= request.seed <= contract.MAX_SEED


def test_edit_size_defaults_to_input_size_snapped_to_16():
    request = parse_request(tensors(prompt=b"x", image=png_bytes(200, 150)))
    assert (request.width, request.height) == (192, 144)
    assert request.image.size == (192, 144)


def test_large_input_is_scaled_into_limits_keeping_aspect():
    request = parse_request(tensors(prompt=b"x", image=png_bytes(4000, 1000)))
    assert request.width == contract.MAX_SIZE
    assert request.height == 512


def test_requested_size_wins_and_image_is_fitted_to_it():
    request = parse_request(tensors(prompt=b"x", image=png_bytes(300, 100), width=128, height=128))
    assert request.image.size == (128, 128)


def test_explicit_values_are_kept():
    request = parse_request(
        tensors(prompt=b"x", seed=42, steps=7, guidance=3.5, width=64, height=80, output_format=b"JPG")
    )
    assert (request.seed, request.steps, request.guidance, request.width, request.height) == (42, 7, 3.5, 64, 80)
    assert request.output_format == "jpeg"


@pytest.mark.parametrize(
    "field, values",
    [
        ("prompt", {"prompt": None}),
        ("prompt", {"prompt": b""}),
        ("prompt", {"prompt": b"   "}),
        ("prompt", {"prompt": b"\xff\xfe"}),
        ("prompt", {"prompt": b"x" * (contract.MAX_PROMPT_BYTES + 1)}),
        ("image", {"image": b"not an image"}),
        ("image", {"image": png_bytes()[:40]}),
        ("image", {"image": b""}),
        ("width", {"width": 65, "height": 64}),
        ("width", {"width": 4096, "height": 64}),
        ("height", {"width": 64, "height": 0}),
        ("height", {"width": 64}),
        ("width", {"height": 64}),
        ("steps", {"steps": 0}),
        ("steps", {"steps": contract.MAX_STEPS + 1}),
        ("guidance", {"guidance": math.nan}),
        ("guidance", {"guidance": math.inf}),
        ("guidance", {"guidance": -1.0}),
        ("seed", {"seed": -1}),
        ("output_format", {"output_format": b"gif"}),
        ("output_format", {"output_format": b""}),
    ],
)
def test_bad_field_is_named(field, values):
    values = {"prompt": b"make it snowy", **values}
    with pytest.raises(InvalidRequest) as info:
        parse_request(tensors(**values))
    assert info.value.field == field
    assert f"'{field}'" in str(info.value)


def test_wrong_element_count_is_named():
    bad = {"prompt": np.array([[b"a", b"b"]], dtype=np.object_)}
    with pytest.raises(InvalidRequest, match="'prompt'"):
        parse_request(bad)


def test_wrong_dtype_is_named():
    bad = tensors(prompt=b"x")
    bad["steps"] = np.array([[2.5]], dtype=np.float32)
    with pytest.raises(InvalidRequest, match="'steps'"):
        parse_request(bad)
