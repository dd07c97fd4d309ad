"""Client for the FLUX.1-Kontext Triton model."""

from .aio import AsyncKontextClient
from .client import KontextClient
from .errors import (
    InferenceFailedError,
    InvalidRequestError,
    KontextError,
    ModelNotReadyError,
    RequestTimeoutError,
    ServerUnavailableError,
)
from .protocol import QUALITY_THRESHOLDS, EditResult, Progress

__all__ = [
    "AsyncKontextClient",
    "EditResult",
    "InferenceFailedError",
    "InvalidRequestError",
    "KontextClient",
    "KontextError",
    "ModelNotReadyError",
    "Progress",
    "QUALITY_THRESHOLDS",
    "RequestTimeoutError",
    "ServerUnavailableError",
]
