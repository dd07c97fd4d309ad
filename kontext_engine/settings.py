"""Operator settings: the typed table behind config.pbtxt's `parameters`.

Each field is one parameter key; its docstring line in the README's table comes from here.
Unknown keys and malformed values fail start-up with one clear message.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

from .loading import EMBEDDED_TINY


@dataclass(frozen=True)
class EngineSettings:
    model_source: str = EMBEDDED_TINY  # embedded-tiny, a local diffusers directory, or a hub id
    dtype: str = "auto"  # auto (bfloat16 on GPU, float32 on CPU), bfloat16, float16, float32

    @classmethod
    def from_parameters(cls, parameters: Mapping[str, str]) -> "EngineSettings":
        """Builds settings from config.pbtxt parameters (all strings in Triton)."""
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(parameters) - set(known))
        if unknown:
            raise ValueError(f"unknown parameter(s) {unknown}; known: {sorted(known)}")
        values = {}
        for key, raw in parameters.items():
            kind = type(known[key].default)
            try:
                values[key] = _parse(raw, kind)
            except ValueError:
                raise ValueError(f"parameter {key!r}: cannot read {raw!r} as {kind.__name__}") from None
        return cls(**values)


def _parse(raw: str, kind: type):
    raw = raw.strip()
    if kind is bool:
        lowered = raw.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(raw)
        return lowered in ("true", "1", "yes", "on")
    return kind(raw)
