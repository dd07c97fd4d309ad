"""Error responses and streaming events, shared by both models (no torch: the unary front imports it).

The streaming model's `event` output is one JSON object per response (kontext_engine/contract.py):
"progress" and "result" for its own clients; "accepted" and "error" only for requests the unary front
forwarded (kontext_triton/forwarding.py).
"""

from __future__ import annotations

import json
import os

import numpy as np
import triton_python_backend_utils as pb_utils

from kontext_engine import contract

# Codes an error event may name (what serve() answers with); anything else reads as INTERNAL.
ERROR_CODES = ("INVALID_ARG", "UNAVAILABLE", "CANCELLED", "INTERNAL")


def error_response(message: str, code) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def event_tensor(payload: dict) -> "pb_utils.Tensor":
    return pb_utils.Tensor(contract.EVENT.name, np.array([json.dumps(payload)], dtype=np.object_))


def progress_event(done: int, total: int, elapsed_s: float) -> dict:
    eta_s = elapsed_s / done * (total - done)
    return {"type": "progress", "step": done, "steps": total, "elapsed_s": round(elapsed_s, 3), "eta_s": round(eta_s, 3)}


def accepted_event() -> dict:
    """The pipeline process took a forwarded request: the front watches that process until it answers."""
    return {"type": "accepted", "pid": os.getpid()}


def error_event(message: str, code) -> dict:
    """A forwarded request's failure (BLS would turn every error code into INTERNAL)."""
    name = next((n for n in ERROR_CODES if getattr(pb_utils.TritonError, n) == code), "INTERNAL")
    return {"type": "error", "code": name, "message": message}


def error_from_event(event: dict) -> "pb_utils.InferenceResponse":
    code = event.get("code") if event.get("code") in ERROR_CODES else "INTERNAL"
    return error_response(str(event.get("message", "")), getattr(pb_utils.TritonError, code))
