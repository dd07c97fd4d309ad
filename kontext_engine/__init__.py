"""FLUX.1-Kontext serving engine: plain Python, no Triton import."""

from .context_parallel import GroupBroken
from .engine import Cancelled, EngineResult, KontextEngine
from .errors import InvalidRequest
from . import contract
from .parsing import EditRequest, parse_request

__all__ = ["Cancelled", "contract", "EditRequest", "EngineResult", "GroupBroken", "InvalidRequest", "KontextEngine", "parse_request"]
