"""Image decoding with limits checked before any pixel is decoded, and encoding of results."""

from __future__ import annotations

import io
import logging
import warnings

from PIL import Image, ImageOps

from . import contract
from .errors import InvalidRequest

log = logging.getLogger(__name__)

_PIL_SAVE_FORMAT = {"png": "PNG", "jpeg": "JPEG", "webp": "WEBP"}
# Fast, size-reasonable settings: PNG level 1 costs a fraction of level 6 for similar size.
_SAVE_OPTIONS = {"png": {"compress_level": 1}, "jpeg": {"quality": 95}, "webp": {"quality": 95}}


def decode_image(data: bytes, field: str = contract.IMAGE.name) -> Image.Image:
    """Decodes PNG/JPEG/WebP bytes to an RGB image.

    The pixel count is read from the header and checked against MAX_INPUT_PIXELS before decoding,
    so a decompression bomb costs nothing. Any failure to decode raises InvalidRequest, whatever PIL
    raised. Metadata is advisory: an EXIF orientation is applied when it can be read, and a broken
    EXIF block is ignored (the pixels are still the client's image).
    """
    if not data:
        raise InvalidRequest(field, "is empty")
    if len(data) > contract.MAX_IMAGE_BYTES:
        raise InvalidRequest(field, f"is {len(data)} bytes, over the {contract.MAX_IMAGE_BYTES}-byte limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data), formats=contract.INPUT_FORMATS)
    except (Image.DecompressionBombWarning, Image.DecompressionBombError) as exc:
        raise InvalidRequest(field, f"has too many pixels ({exc})") from None
    except Exception:  # PIL raises several types for unrecognised data
        raise InvalidRequest(field, "is not a PNG, JPEG or WebP image") from None
    width, height = image.size
    if width * height > contract.MAX_INPUT_PIXELS:
        raise InvalidRequest(
            field, f"is {width}x{height}, over the limit of {contract.MAX_INPUT_PIXELS} pixels"
        )
    try:
        image.load()
        return _upright(image).convert("RGB")
    except Exception as exc:  # whatever the container or a metadata chunk makes PIL raise
        raise InvalidRequest(field, f"could not be decoded ({type(exc).__name__}: {_clip(exc)})") from None


def _upright(image: Image.Image) -> Image.Image:
    """Applies the EXIF orientation; an EXIF block PIL cannot parse is ignored."""
    try:
        return ImageOps.exif_transpose(image)
    except Exception as exc:
        log.info("ignoring unreadable EXIF metadata (%s: %s)", type(exc).__name__, _clip(exc))
        return image


def _clip(exc: Exception, limit: int = 120) -> str:
    """An exception message short enough for a client error (PIL may quote the client's bytes)."""
    text = str(exc)
    return text if len(text) <= limit else text[:limit] + "..."


def fit_to_size(image: Image.Image, width: int, height: int) -> Image.Image:
    """Scales to cover width x height, then centre-crops: the aspect ratio is never distorted."""
    if image.size == (width, height):
        return image
    return ImageOps.fit(image, (width, height), method=Image.Resampling.LANCZOS)


def encode_image(image: Image.Image, output_format: str) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=_PIL_SAVE_FORMAT[output_format], **_SAVE_OPTIONS[output_format])
    return buffer.getvalue()
