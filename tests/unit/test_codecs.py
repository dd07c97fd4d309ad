import io

import pytest
from PIL import Image

from kontext_engine import InvalidRequest, contract
from kontext_engine.codecs import decode_image, encode_image, fit_to_size
from tests.conftest import png_bytes


def test_decompression_bomb_is_refused_before_decoding():
    buffer = io.BytesIO()
    Image.new("1", (5000, 4000)).save(buffer, format="PNG")  # 20 Mpx in a few kB
    assert len(buffer.getvalue()) < 100_000
    with pytest.raises(InvalidRequest, match="'image'.*pixels"):
        decode_image(buffer.getvalue())


def test_truncated_image_is_refused():
    data = png_bytes(256, 256, (1, 2, 3))
    noisy = Image.effect_noise((256, 256), 50).convert("RGB")
    buffer = io.BytesIO()
    noisy.save(buffer, format="PNG")
    with pytest.raises(InvalidRequest, match="'image'"):
        decode_image(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    assert decode_image(data).size == (256, 256)


def test_other_formats_are_refused():
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="GIF")
    with pytest.raises(InvalidRequest, match="PNG, JPEG or WebP"):
        decode_image(buffer.getvalue())


def test_oversized_payload_is_refused():
    with pytest.raises(InvalidRequest, match="byte limit"):
        decode_image(b"\0" * (contract.MAX_IMAGE_BYTES + 1))


@pytest.mark.parametrize("fmt", ["png", "jpeg", "webp"])
def test_encode_roundtrip(fmt):
    image = Image.new("RGB", (48, 32), (200, 10, 10))
    decoded = Image.open(io.BytesIO(encode_image(image, fmt)))
    assert decoded.format == {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}[fmt]
    assert decoded.size == (48, 32)


def test_fit_crops_instead_of_stretching():
    image = Image.new("RGB", (300, 100))
    image.paste((255, 0, 0), (100, 0, 200, 100))  # red centre third
    fitted = fit_to_size(image, 64, 64)
    assert fitted.size == (64, 64)
    assert fitted.getpixel((32, 32))[0] > 200 and fitted.getpixel((2, 32))[0] > 200
