"""FLUX.1-Kontext serving engine: plain Python, no Triton import."""

from .engine import Cancelled, EditResult, KontextEngine
from .errors import InvalidRequest
from . import contract
from .schema import EditRequest, parse_request

__all__ = ["Cancelled", "contract", "EditRequest", "EditResult", "InvalidRequest", "KontextEngine", "parse_request"]
