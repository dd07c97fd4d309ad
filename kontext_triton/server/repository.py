"""Copies of the model repository with overridden config.pbtxt fields, for tests and benchmarks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable, Optional

from google.protobuf import text_format

from .process import DEFAULT_MODEL_REPOSITORY


def write_repository(
    target: Path,
    parameters: Optional[dict[str, str]] = None,
    edit: Optional[Callable] = None,
    models: tuple[str, ...] = ("flux_kontext", "flux_kontext_stream"),
) -> Path:
    """Copies `models` into target; applies edit(config) to each ModelConfig and sets `parameters` (engine
    settings) on the model that holds the pipeline (the unary front only forwards to it)."""
    from tritonclient.grpc import model_config_pb2  # the ModelConfig message, as tritonclient ships it

    target.mkdir(parents=True, exist_ok=True)
    for model in models:
        shutil.copytree(DEFAULT_MODEL_REPOSITORY / model, target / model, ignore=shutil.ignore_patterns("__pycache__"))
        path = target / model / "config.pbtxt"
        config = text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())
        if "pipeline_model" not in config.parameters:
            for key, value in (parameters or {}).items():
                config.parameters[key].string_value = value
        if edit is not None:
            edit(config)
        path.write_text(text_format.MessageToString(config))
    return target
