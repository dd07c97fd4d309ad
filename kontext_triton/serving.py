"""One `execute` call: parse every request, run the valid ones, answer each as soon as its own
outcome is known (an invalid request at once, each batch group when it ends)."""

import gc
import json
import locale
import logging
import os
import time
import traceback
from typing import Callable, Optional

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from kontext_engine import Cancelled, EngineResult, InvalidRequest, KontextEngine, contract, parse_request
from kontext_engine.profiles import settings_from_parameters

from .metrics import KontextMetrics
from .parameters import request_timeout_s, split_parameters

# (request position in execute's list, steps done, steps total, seconds since its batch started)
ProgressCallback = Callable[[int, int, int, float], None]
# (request position in execute's list, its final response)
Respond = Callable[[int, "pb_utils.InferenceResponse"], None]



def use_utf8_text_files() -> None:
    """The backend stub embeds Python without locale set-up, so open() without an encoding reads
    ASCII; torch.compile reads its kernel templates that way, and torch 2.13's include non-ASCII
    ones: every compile failed in the stub. UTF-8, as a command-line python has it."""
    if locale.getpreferredencoding(False).lower().replace("-", "") != "utf8":
        locale.setlocale(locale.LC_CTYPE, "C.UTF-8")


def model_parameters(config: dict) -> tuple[dict[str, str], dict[str, str]]:
    """config.pbtxt's parameters: (serving options, engine settings)."""
    return split_parameters({key: value["string_value"] for key, value in config.get("parameters", {}).items()},
                            os.environ)


def instance_device(args: dict) -> torch.device:
    """The device Triton assigned this instance (KIND_GPU with its device id, else the CPU); never GPU 0
    by assumption."""
    if args["model_instance_kind"].upper() == "GPU":
        return torch.device("cuda", int(args["model_instance_device_id"]))
    return torch.device("cpu")


def load_engine(args: dict, config: dict, engine_parameters: dict[str, str]) -> KontextEngine:
    """Builds the engine on the device Triton assigned to this instance; one start-up log line."""
    # The engine logs warm-up and compile-cache events with `logging`; the stub's stderr goes to
    # Triton's log.
    logging.basicConfig(level=logging.INFO, format=f"{args['model_instance_name']} %(levelname)s %(name)s: %(message)s")
    use_utf8_text_files()
    device = instance_device(args)
    settings = settings_from_parameters(engine_parameters, os.environ)
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


def result_response(result: EngineResult) -> "pb_utils.InferenceResponse":
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


def _timeout_s(request, server_limit_s: float) -> float:
    """The request's compute budget: the server's limit, or the client's Triton timeout if shorter."""
    client_us = request.timeout()
    return min(server_limit_s, client_us / 1e6) if client_us > 0 else server_limit_s


def serve(
    engine: KontextEngine,
    metrics: KontextMetrics,
    requests: list,
    respond: Respond,
    request_timeout_s: float,
    on_progress: Optional[ProgressCallback] = None,
) -> None:
    """Answers every request exactly once through respond(), as soon as its outcome is known.

    Bad requests get INVALID_ARG naming the field, cancelled ones CANCELLED, ones past their deadline
    (stopped within a step) UNAVAILABLE, failures INTERNAL with the request id (the traceback goes to
    the server log, never to the client); none of them affects another request.
    """
    started = time.monotonic()
    deadlines = [started + _timeout_s(request, request_timeout_s) for request in requests]
    answered = [False] * len(requests)

    def answer(position: int, outcome: str, response) -> None:
        answered[position] = True
        try:
            respond(position, response)
            metrics.request(outcome, time.monotonic() - started)
        except Exception:  # a response that cannot be sent must not stop the others
            pb_utils.Logger.log_error(f"request {_request_id(requests[position])}: answering failed\n"
                                      f"{traceback.format_exc()}")

    def fail(position: int, what: str, exc: Optional[BaseException]) -> None:
        request_id = _request_id(requests[position])
        details = "".join(traceback.format_exception(exc)) if exc is not None else ""
        pb_utils.Logger.log_error(f"request {request_id}: {what}\n{details}")
        answer(position, "failed", error_response(
            f"{what} (request id {request_id}); the server log has the details", pb_utils.TritonError.INTERNAL))

    valid, positions = [], []
    for position, request in enumerate(requests):
        try:
            valid.append(parse_request(request_tensors(request)))
            positions.append(position)
        except InvalidRequest as exc:
            pb_utils.Logger.log_warn(f"request {_request_id(request)}: {exc}")
            answer(position, "invalid", error_response(str(exc), pb_utils.TritonError.INVALID_ARG))
        except Exception as exc:  # one unreadable request must not fail its neighbours
            fail(position, "the request could not be read", exc)

    clock = {"batch_started": time.monotonic(), "last_step": 0.0}

    def on_step(indices, done, total):
        now = time.monotonic()
        if done == 1:  # the first step's time also holds text and image encoding: not observed
            metrics.batch_size(len(indices))
        else:
            metrics.step(now - clock["last_step"])
        clock["last_step"] = now
        if on_progress is not None:
            for index in indices:
                on_progress(positions[index], done, total, now - clock["batch_started"])

    def stop_requested(index: int) -> bool:
        position = positions[index]
        return requests[position].is_cancelled() or time.monotonic() > deadlines[position]

    def on_done(index, outcome):
        clock["batch_started"] = time.monotonic()
        position = positions[index]
        request = requests[position]
        if request.is_cancelled():
            answer(position, "cancelled", error_response("request cancelled by the client",
                                                         pb_utils.TritonError.CANCELLED))
        elif isinstance(outcome, Cancelled) or time.monotonic() > deadlines[position]:
            # Past its time limit: its batch stopped, or ran on for live neighbours; either way not ok.
            budget = deadlines[position] - started
            answer(position, "expired", error_response(
                f"request exceeded its time limit of {budget:.0f} s", pb_utils.TritonError.UNAVAILABLE))
        elif isinstance(outcome, EngineResult):
            computed = outcome.metadata["steps_computed"]
            metrics.steps(computed, outcome.metadata["steps"] - computed)
            answer(position, "ok", result_response(outcome))
        else:
            fail(position, f"inference failed ({type(outcome).__name__})", outcome)

    try:
        engine.run(valid, on_step=on_step, is_cancelled=stop_requested, on_done=on_done)
    finally:
        metrics.batch_size(0)
        for position, done in enumerate(answered):  # a safety net: no request is ever left waiting
            if not done:
                fail(position, "the request was not completed", None)


class EngineModel:
    """What both models' TritonPythonModel share: an engine on this instance's device, its metrics,
    and the server's per-request time limit. Subclasses write execute()."""

    def initialize(self, args):
        config = json.loads(args["model_config"])
        serving, engine_parameters = model_parameters(config)
        self.request_timeout_s = request_timeout_s(serving)
        self.engine = load_engine(args, config, engine_parameters)
        self.metrics = KontextMetrics(args["model_name"])

    def finalize(self):
        device, self.engine = self.engine.device, None
        free_device_memory(device)
