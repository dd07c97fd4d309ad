"""Turns the raw tensors of one request into a validated EditRequest.

The adapter (model.py) hands over one numpy array (or None) per contract input; everything about
names, dtypes, defaults and limits is decided here, from `contract`.
"""

from __future__ import annotations

import math
import secrets
from dataclasses import dataclass
from typing import Mapping, Optional

import numpy as np
from PIL import Image

from . import contract
from .codecs import decode_image, fit_to_size
from .errors import InvalidRequest


@dataclass
class EditRequest:
    prompt: str
    image: Optional[Image.Image]  # already fitted to (width, height); None for text-to-image
    seed: int
    steps: int
    guidance: float
    width: int
    height: int
    output_format: str
    cache_threshold: Optional[float] = None  # None: the engine's default

    @property
    def batch_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call."""
        return (self.width, self.height, self.steps, self.guidance, self.image is not None, self.cache_threshold)


def _scalar(tensors: Mapping[str, Optional[np.ndarray]], spec: contract.TensorSpec):
    """The single element of an optional or required input; None when absent."""
    array = tensors.get(spec.name)
    if array is None:
        if not spec.optional:
            raise InvalidRequest(spec.name, "is required")
        return None
    if array.size != 1:
        raise InvalidRequest(spec.name, f"must hold exactly one element, got shape {list(array.shape)}")
    return array.reshape(-1)[0]


def _text(tensors, spec: contract.TensorSpec, max_bytes: int) -> Optional[str]:
    value = _scalar(tensors, spec)
    if value is None:
        return None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, (bytes, np.bytes_)):
        raise InvalidRequest(spec.name, f"must be a string (BYTES), got {type(value).__name__}")
    if len(value) > max_bytes:
        raise InvalidRequest(spec.name, f"is {len(value)} bytes, over the {max_bytes}-byte limit")
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidRequest(spec.name, "is not valid UTF-8") from None


def _integer(tensors, spec: contract.TensorSpec, low: int, high: int) -> Optional[int]:
    value = _scalar(tensors, spec)
    if value is None:
        return None
    if not isinstance(value, (int, np.integer)):
        raise InvalidRequest(spec.name, f"must be an integer, got {type(value).__name__}")
    if not low <= int(value) <= high:
        raise InvalidRequest(spec.name, f"must be in [{low}, {high}], got {int(value)}")
    return int(value)


def _real(tensors, spec: contract.TensorSpec, low: float, high: float) -> Optional[float]:
    value = _scalar(tensors, spec)
    if value is None:
        return None
    if not isinstance(value, (float, np.floating)):
        raise InvalidRequest(spec.name, f"must be a float, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or not low <= value <= high:
        raise InvalidRequest(spec.name, f"must be a finite number in [{low}, {high}], got {value}")
    return value


def _size(tensors, spec: contract.TensorSpec) -> Optional[int]:
    value = _integer(tensors, spec, contract.MIN_SIZE, contract.MAX_SIZE)
    if value is not None and value % contract.SIZE_MULTIPLE:
        raise InvalidRequest(spec.name, f"must be a multiple of {contract.SIZE_MULTIPLE}, got {value}")
    return value


def _size_from_image(image: Image.Image) -> tuple[int, int]:
    """The input's own size, scaled down to the output limits, snapped down to SIZE_MULTIPLE."""
    width, height = image.size
    scale = min(1.0, contract.MAX_SIZE / max(width, height), math.sqrt(contract.MAX_OUTPUT_PIXELS / (width * height)))
    snap = contract.SIZE_MULTIPLE

    def fit(n: float) -> int:
        return max(contract.MIN_SIZE, int(n * scale) // snap * snap)

    return fit(width), fit(height)


def parse_request(tensors: Mapping[str, Optional[np.ndarray]]) -> EditRequest:
    """Validates one request. Raises InvalidRequest naming the first bad field."""
    prompt = _text(tensors, contract.PROMPT, contract.MAX_PROMPT_BYTES)
    if not prompt or not prompt.strip():
        raise InvalidRequest(contract.PROMPT.name, "must not be empty")

    steps = _integer(tensors, contract.STEPS, contract.MIN_STEPS, contract.MAX_STEPS)
    seed = _integer(tensors, contract.SEED, 0, contract.MAX_SEED)

    guidance = _real(tensors, contract.GUIDANCE, contract.MIN_GUIDANCE, contract.MAX_GUIDANCE)
    cache_threshold = _real(tensors, contract.CACHE_THRESHOLD, contract.MIN_CACHE_THRESHOLD,
                            contract.MAX_CACHE_THRESHOLD)

    output_format = _text(tensors, contract.OUTPUT_FORMAT, 16)
    output_format = contract.DEFAULT_OUTPUT_FORMAT if output_format is None else output_format.lower()
    output_format = contract.OUTPUT_FORMAT_ALIASES.get(output_format, output_format)
    if output_format not in contract.OUTPUT_FORMATS:  # an empty string is not "absent"
        raise InvalidRequest(
            contract.OUTPUT_FORMAT.name, f"must be one of {', '.join(contract.OUTPUT_FORMATS)}, got {output_format!r}"
        )

    width, height = _size(tensors, contract.WIDTH), _size(tensors, contract.HEIGHT)
    if (width is None) != (height is None):
        missing = contract.HEIGHT.name if height is None else contract.WIDTH.name
        raise InvalidRequest(missing, "width and height must be given together")

    image_bytes = _scalar(tensors, contract.IMAGE)
    image = None
    if image_bytes is not None:
        if not isinstance(image_bytes, (bytes, np.bytes_)):
            raise InvalidRequest(contract.IMAGE.name, f"must be encoded image bytes, got {type(image_bytes).__name__}")
        image = decode_image(bytes(image_bytes))
        if width is None:
            width, height = _size_from_image(image)
        image = fit_to_size(image, width, height)
    elif width is None:
        width = height = contract.DEFAULT_TEXT_TO_IMAGE_SIZE

    if width * height > contract.MAX_OUTPUT_PIXELS:
        raise InvalidRequest(contract.WIDTH.name, f"{width}x{height} is over {contract.MAX_OUTPUT_PIXELS} pixels")

    return EditRequest(
        prompt=prompt,
        image=image,
        seed=secrets.randbelow(contract.MAX_SEED + 1) if seed is None else seed,
        steps=contract.DEFAULT_STEPS if steps is None else steps,
        guidance=contract.DEFAULT_GUIDANCE if guidance is None else guidance,
        width=width,
        height=height,
        output_format=output_format,
        cache_threshold=cache_threshold,
    )
