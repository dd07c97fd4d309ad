"""The wire format of the flux_kontext model: tensor names and dtypes, request building, result parsing.

Mirrors the server's contract by name only; tests/unit/test_contract.py checks the two agree.
"""

from __future__ import annotations

import importlib
import io
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Union

import numpy as np
from PIL import Image

from .errors import (
    InferenceFailedError,
    InvalidRequestError,
    KontextError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)

MODEL_NAME = "flux_kontext"
STREAM_MODEL_NAME = "flux_kontext_stream"

# name -> Triton dtype, for every input the model accepts
INPUT_DTYPES = {
    "prompt": "BYTES",
    "image": "BYTES",
    "seed": "INT64",
    "steps": "INT32",
    "guidance": "FP32",
    "width": "INT32",
    "height": "INT32",
    "output_format": "BYTES",
    "cache_threshold": "FP32",
}
# --quality presets: the First Block Cache threshold each asks for. exact runs every step; 0.08 and 0.12
# are para-attn's recommended thresholds for bf16 and FP8 (fewer steps computed on real weights).
QUALITY_THRESHOLDS = {"exact": 0.0, "balanced": 0.08, "fast": 0.12}
OUTPUT_IMAGE = "output_image"
METADATA = "metadata"
OUTPUT_NAMES = (OUTPUT_IMAGE, METADATA)
EVENT = "event"
STREAM_OUTPUT_NAMES = (EVENT, OUTPUT_IMAGE, METADATA)

_NUMPY = {"BYTES": np.object_, "INT64": np.int64, "INT32": np.int32, "FP32": np.float32}

ImageInput = Union[Image.Image, bytes, str, Path]


@dataclass
class EditResult:
    image: Image.Image
    metadata: dict
    raw: bytes  # the encoded image exactly as the server sent it

    def save(self, path: Union[str, Path]) -> None:
        Path(path).write_bytes(self.raw)


@dataclass
class Progress:
    """One streamed progress event: `step` of `steps` done."""

    step: int
    steps: int
    elapsed_s: float
    eta_s: float


def encode_image(image: ImageInput) -> bytes:
    """Accepts a PIL image (sent as PNG), encoded bytes, or a file path (sent as is)."""
    if isinstance(image, Image.Image):
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        return buffer.getvalue()
    if isinstance(image, (bytes, bytearray)):
        return bytes(image)
    return Path(image).read_bytes()


def request_values(
    prompt: str,
    image: Optional[ImageInput] = None,
    *,
    seed: Optional[int] = None,
    steps: Optional[int] = None,
    guidance: Optional[float] = None,
    width: Optional[int] = None,
    height: Optional[int] = None,
    output_format: Optional[str] = None,
    cache_threshold: Optional[float] = None,
) -> dict[str, np.ndarray]:
    """Named input arrays with the batch dimension ([1, 1]); omitted options are not sent."""
    values = {
        "prompt": prompt.encode("utf-8"),
        "image": None if image is None else encode_image(image),
        "seed": seed,
        "steps": steps,
        "guidance": guidance,
        "width": width,
        "height": height,
        "output_format": None if output_format is None else output_format.encode("utf-8"),
        "cache_threshold": cache_threshold,
    }
    return {
        name: np.array([[value]], dtype=_NUMPY[INPUT_DTYPES[name]])
        for name, value in values.items()
        if value is not None
    }


DEFAULT_TIMEOUT_S = 600.0  # a full-size 1024x1024 edit takes seconds; queueing can add more
RELOAD_WAIT_S = 60.0  # how long a request keeps retrying while the model is reloaded
RELOAD_RETRY_S = 0.5
# The request's server-side time limit is the client's timeout plus this. Over gRPC the client's give-up
# cancels at once (answered CANCELLED); the limit covers HTTP, whose disconnects Triton 2.51 cannot see
# (it counts from when the model takes the request, so queue time comes on top).
ABANDON_GRACE_S = 1.0
DEFAULT_URLS = {"grpc": "127.0.0.1:8001", "http": "127.0.0.1:8000"}
_TRANSPORTS = {
    ("grpc", False): "tritonclient.grpc",
    ("http", False): "tritonclient.http",
    ("grpc", True): "tritonclient.grpc.aio",
    ("http", True): "tritonclient.http.aio",
}


class ClientBase:
    """What the sync and asyncio clients share: address, protocol, timeouts, per-request options."""

    def __init__(self, url: Optional[str], protocol: str, timeout_s: float, model_name: str, use_asyncio: bool):
        if protocol not in DEFAULT_URLS:
            raise ValueError(f"protocol must be 'grpc' or 'http', got {protocol!r}")
        self._module = importlib.import_module(_TRANSPORTS[(protocol, use_asyncio)])
        self.protocol = protocol
        self.url = url or DEFAULT_URLS[protocol]
        self.timeout_s = timeout_s
        self.model_name = model_name

    def _infer_arguments(self, arrays, time_limit_s: Optional[float]) -> tuple[list, dict]:
        """Inputs and infer() keywords: outputs, client deadline (gRPC) and the server-side time limit.

        The time limit (Triton's per-request timeout, in us) rejects the request if it is still queued
        when it runs out and stops its compute if it is running; it defaults to this client's own
        timeout plus ABANDON_GRACE_S, so work the client has given up on does not go on holding the server."""
        limit_s = self.timeout_s + ABANDON_GRACE_S if time_limit_s is None else min(time_limit_s, self.timeout_s)
        keywords = {"outputs": [self._module.InferRequestedOutput(name) for name in OUTPUT_NAMES],
                    "timeout": max(1, int(limit_s * 1e6))}
        if self.protocol == "grpc":
            keywords["client_timeout"] = self.timeout_s
        return build_inputs(self._module, arrays), keywords

    def _retry_delay(self, error: KontextError, started: float) -> Optional[float]:
        """Seconds to wait before sending again, or None to give up: only while the model reloads
        (after its stub died, the watchdog reloads it in seconds), for at most RELOAD_WAIT_S and never
        past this client's timeout."""
        elapsed = time.monotonic() - started
        if isinstance(error, ModelNotReadyError) and elapsed + RELOAD_RETRY_S < min(RELOAD_WAIT_S, self.timeout_s):
            return RELOAD_RETRY_S
        return None

    def _attempt_keywords(self, keywords: dict, started: float) -> dict:
        """A retry gets only the time left of the client's timeout (gRPC; HTTP's is per connection)."""
        if self.protocol != "grpc":
            return keywords
        return {**keywords, "client_timeout": max(0.1, self.timeout_s - (time.monotonic() - started))}


def build_inputs(module, arrays: dict[str, np.ndarray]) -> list:
    """InferInput objects of tritonclient.grpc or tritonclient.http (same API, different classes)."""
    inputs = []
    for name, array in arrays.items():
        infer_input = module.InferInput(name, list(array.shape), INPUT_DTYPES[name])
        infer_input.set_data_from_numpy(array)
        inputs.append(infer_input)
    return inputs


def parse_stream_event(result) -> Union[Progress, EditResult]:
    event = json.loads(result.as_numpy(EVENT).reshape(-1)[0])
    if event["type"] == "progress":
        return Progress(event["step"], event["steps"], event["elapsed_s"], event["eta_s"])
    return parse_result(result)


def parse_result(result) -> EditResult:
    raw = result.as_numpy(OUTPUT_IMAGE).reshape(-1)[0]
    metadata = json.loads(result.as_numpy(METADATA).reshape(-1)[0])
    return EditResult(image=Image.open(io.BytesIO(raw)), metadata=metadata, raw=bytes(raw))


_INVALID_MESSAGE = re.compile(r"^(\[request id: [^\]]*\] )?(invalid '|inference input |unexpected inference input)")

# Triton's words while a model is unloaded and loaded again, or while its dead stub awaits the reload.
_NOT_READY_MESSAGE = re.compile(r"unknown model|is not ready|stub process .* is not healthy", re.IGNORECASE)

_STATUS_TO_ERROR = {
    "StatusCode.INVALID_ARGUMENT": InvalidRequestError,
    "400": InvalidRequestError,
    "StatusCode.UNAVAILABLE": ServerUnavailableError,
    "503": ServerUnavailableError,
    "StatusCode.DEADLINE_EXCEEDED": RequestTimeoutError,
}


def translate_error(exc: Exception) -> KontextError:
    """Maps tritonclient and transport exceptions to this package's typed errors."""
    from tritonclient.utils import InferenceServerException

    if isinstance(exc, InferenceServerException):
        message = exc.message() or str(exc)
        status = str(exc.status())
        if "Deadline Exceeded" in message or "timed out" in message.lower():
            return RequestTimeoutError(message)
        if "failed to connect" in message.lower() or "connection refused" in message.lower():
            return ServerUnavailableError(message)
        if _NOT_READY_MESSAGE.search(message):
            return ModelNotReadyError(message)
        if "exceeds maximum queue size" in message.lower() or "request timeout expired" in message.lower():
            return ServerUnavailableError(message)
        if exc.status() is None and _INVALID_MESSAGE.match(message):
            # gRPC stream errors carry a message but no status code: the server's invalid-field
            # messages ("invalid 'width': ...") and Triton's own input checks are recognised by text.
            return InvalidRequestError(message)
        return _STATUS_TO_ERROR.get(status, InferenceFailedError)(message)
    if isinstance(exc, TimeoutError) or type(exc).__name__ in ("ConnectionTimeout", "NetworkTimeout"):
        return RequestTimeoutError(str(exc) or type(exc).__name__)
    if isinstance(exc, (ConnectionError, OSError)):
        return ServerUnavailableError(f"cannot reach the server: {exc}")
    return KontextError(f"{type(exc).__name__}: {exc}")
