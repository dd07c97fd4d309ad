"""FLUX.1-Kontext serving engine: plain Python, no Triton import.

The contract and the request errors import nothing heavy; the engine (torch, diffusers) loads on first
use of its names, so a process that only forwards requests (the unary front model) never imports torch.
"""

import importlib

from . import contract
from .errors import InvalidRequest

_LAZY = {
    "Cancelled": ".engine", "EngineResult": ".engine", "KontextEngine": ".engine",
    "GroupBroken": ".context_parallel", "EditRequest": ".parsing", "parse_request": ".parsing",
}

__all__ = ["contract", "InvalidRequest", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
