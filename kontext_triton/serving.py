"""One `execute` call: parse every request, run the valid ones, answer each in order."""

import gc
import json
import locale
import logging
import os
import time
from typing import Callable, Optional

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from kontext_engine import Cancelled, EditResult, InvalidRequest, KontextEngine, contract, parse_request
from kontext_engine.loading import resolve_device
from kontext_engine.settings import EngineSettings

from .metrics import KontextMetrics

# (request position in execute's list, steps done, steps total, seconds since execute started)
ProgressCallback = Callable[[int, int, int, float], None]


def use_utf8_text_files() -> None:
    """The backend stub embeds Python without locale set-up, so open() without an encoding reads
    ASCII; torch.compile reads its kernel templates that way, and torch 2.13's include non-ASCII
    ones: every compile failed in the stub. UTF-8, as a command-line python has it."""
    if locale.getpreferredencoding(False).lower().replace("-", "") != "utf8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


def load_engine(args: dict) -> KontextEngine:
    """Builds the engine on the device Triton assigned to this instance; one start-up log line."""
    # The engine logs warm-up and compile-cache events with `logging`; the stub's stderr goes to
    # Triton's log.
    logging.basicConfig(level=logging.INFO, format=f"{args['model_instance_name']} %(levelname)s %(name)s: %(message)s")
    use_utf8_text_files()
    config = json.loads(args["model_config"])
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    device = resolve_device(args["model_instance_kind"], int(args["model_instance_device_id"]))
    settings = EngineSettings.from_parameters(parameters, os.environ)
    engine = KontextEngine.load(settings, device, max_batch_size=max(1, config["max_batch_size"]))
    pb_utils.Logger.log_info(f"{args['model_instance_name']}: {engine.describe()}")
    return engine


def free_device_memory(device: torch.device) -> None:
    """After the caller dropped its engine: collect it and return its cached GPU memory (finalize)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def request_tensors(request) -> dict:
    tensors = {}
    for spec in contract.INPUTS:
        tensor = pb_utils.get_input_tensor_by_name(request, spec.name)
        tensors[spec.name] = None if tensor is None else tensor.as_numpy()
    return tensors


def result_response(result: EditResult) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(
        output_tensors=[
            pb_utils.Tensor(contract.OUTPUT_IMAGE.name, np.array([result.image], dtype=np.object_)),
            pb_utils.Tensor(contract.METADATA.name, np.array([json.dumps(result.metadata)], dtype=np.object_)),
        ]
    )


def error_response(message: str, code) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))


def _request_id(request) -> str:
    return request.request_id() or "-"


def serve(
    engine: KontextEngine,
    metrics: KontextMetrics,
    requests: list,
    on_progress: Optional[ProgressCallback] = None,
) -> list:
    """The final response for every request, in order. Bad requests get INVALID_ARG naming the field,
    cancelled ones CANCELLED, failed batches INTERNAL; none of them affects another request."""
    started = time.monotonic()
    responses: list = [None] * len(requests)
    outcomes: list = [None] * len(requests)
    valid, positions = [], []
    for position, request in enumerate(requests):
        try:
            valid.append(parse_request(request_tensors(request)))
            positions.append(position)
        except InvalidRequest as exc:
            pb_utils.Logger.log_warn(f"request {_request_id(request)}: {exc}")
            responses[position] = error_response(str(exc), pb_utils.TritonError.INVALID_ARG)
            outcomes[position] = "invalid"

    last_step = [0.0]

    def on_step(indices, done, total):
        now = time.monotonic()
        if done == 1:  # the first step's time also holds text and image encoding: not observed
            metrics.batch_size(len(indices))
        else:
            metrics.step(now - last_step[0])
        last_step[0] = now
        if on_progress is not None:
            for index in indices:
                on_progress(positions[index], done, total, now - started)

    def is_cancelled(index: int) -> bool:
        return requests[positions[index]].is_cancelled()

    try:
        results = engine.run(valid, on_step=on_step, is_cancelled=is_cancelled)
    finally:
        metrics.batch_size(0)
    for position, outcome in zip(positions, results):
        request = requests[position]
        if isinstance(outcome, Cancelled) or request.is_cancelled():
            responses[position] = error_response("request cancelled by the client", pb_utils.TritonError.CANCELLED)
            outcomes[position] = "cancelled"
        elif isinstance(outcome, EditResult):
            responses[position] = result_response(outcome)
            outcomes[position] = "ok"
            computed = outcome.metadata["steps_computed"]
            metrics.steps(computed, outcome.metadata["steps"] - computed)
        else:
            pb_utils.Logger.log_error(f"request {_request_id(request)}: {outcome!r}")
            responses[position] = error_response(f"inference failed: {outcome}", pb_utils.TritonError.INTERNAL)
            outcomes[position] = "failed"
    elapsed = time.monotonic() - started
    for outcome in outcomes:
        metrics.request(outcome, elapsed)
    return responses
