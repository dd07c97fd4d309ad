"""One `execute` call: parse every request, run the valid ones, answer each as soon as its own
outcome is known (an invalid request at once, each batch group when it ends)."""

import faulthandler
import gc
import json
import locale
import logging
import os
import threading
import time
import traceback
from typing import Callable, Optional

import numpy as np
import torch
import triton_python_backend_utils as pb_utils

from kontext_engine import Cancelled, EngineResult, GroupBroken, InvalidRequest, KontextEngine, contract, parse_request
from kontext_engine.profiles import settings_from_parameters

from .forwarding import Forwarded
from .metrics import KontextMetrics
from .parameters import request_timeout_s, split_parameters
from .responses import error_response

# Seconds a stub whose group broke waits for its execute() to return, then for its answers to leave.
STUCK_EXECUTE_S = 10.0
GROUP_FAILURE_FLUSH_S = 1.0

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


def instance_devices(args: dict, degree: int, gpu_count: int, groups: int = 1) -> list[torch.device]:
    """The devices this instance owns, rank 0's first.

    degree 1: the device Triton assigned (KIND_GPU with its device id, else the CPU); never GPU 0 by
    assumption. degree N > 1 on GPUs needs KIND_MODEL (with KIND_GPU Triton would start an instance on
    every listed GPU): instance i of the model owns GPUs N*i .. N*i + N-1, so instances never share a GPU.
    On a CPU every rank is a CPU process (tests).
    """
    kind = args["model_instance_kind"].upper()
    if degree == 1:
        return [torch.device("cuda", int(args["model_instance_device_id"])) if kind == "GPU" else torch.device("cpu")]
    if kind == "CPU":
        return [torch.device("cpu")] * degree
    if kind != "MODEL":
        raise ValueError(f"context_parallel={degree} needs instance_group kind KIND_MODEL (or KIND_CPU), "
                         f"not KIND_{kind}")
    if groups != 1:  # instance indices count within a group: two groups would claim the same GPUs
        raise ValueError(f"context_parallel={degree} needs exactly one instance_group (use its count), got {groups}")
    index = instance_index(args["model_instance_name"])
    first = degree * index
    if first + degree > gpu_count:
        raise ValueError(f"instance {index} with context_parallel={degree} needs GPUs {first}..{first + degree - 1}; "
                         f"{gpu_count} visible")
    return [torch.device("cuda", first + rank) for rank in range(degree)]


def instance_index(instance_name: str) -> int:
    """Triton names the instances of a group <group name>_<index>, counting from 0."""
    return int(instance_name.rsplit("_", 1)[1])


def load_engine(args: dict, config: dict, engine_parameters: dict[str, str],
                on_group_failure: Optional[Callable[[str], None]] = None) -> KontextEngine:
    """Builds the engine on the device(s) this instance owns; one start-up log line."""
    # The engine logs warm-up and compile-cache events with `logging`; the stub's stderr goes to
    # Triton's log.
    logging.basicConfig(level=logging.INFO, format=f"%(asctime)s {args['model_instance_name']} %(levelname)s %(name)s: %(message)s")
    use_utf8_text_files()
    settings = settings_from_parameters(engine_parameters, os.environ)
    gpu_count = torch.cuda.device_count() if settings.context_parallel > 1 else 0
    device, *worker_devices = instance_devices(args, settings.context_parallel, gpu_count,
                                               groups=len(config.get("instance_group", [])))
    engine = KontextEngine.load(settings, device, max_batch_size=max(1, config["max_batch_size"]),
                                worker_devices=worker_devices, on_group_failure=on_group_failure)
    devices = ", ".join(str(d) for d in (device, *worker_devices))
    pb_utils.Logger.log_info(f"{args['model_instance_name']} on {devices}: {engine.describe()}")
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


def _request_id(request) -> str:
    return request.request_id() or "-"


def _timeout_s(request, server_limit_s: float) -> float:
    """The request's compute budget: the server's limit, or the client's Triton timeout if shorter."""
    client_us = request.timeout()
    return min(server_limit_s, client_us / 1e6) if client_us > 0 else server_limit_s


def group_failure_message(problem: str) -> str:
    return f"this instance's context-parallel group failed ({problem}); it is restarting, retry shortly"


class InFlight:
    """The execute() now running, seen from other threads: a broken context-parallel group answers its
    requests (execute() may be stuck in a collective) and waits for it to end before the stub exits."""

    def __init__(self):
        self._fail_all: Optional[Callable[[str], None]] = None
        self.idle = threading.Event()  # no execute() running
        self.idle.set()
        self.broken: Optional[str] = None  # once set, every request is answered with it at once

    def fail_all(self, message: str) -> None:
        fail_all = self._fail_all  # read once: serve() clears it when its execute() ends
        if fail_all is not None:
            fail_all(message)


def serve(
    engine: KontextEngine,
    metrics: KontextMetrics,
    requests: list,
    respond: Respond,
    request_timeout_s: float,
    on_progress: Optional[ProgressCallback] = None,
    in_flight: Optional[InFlight] = None,
    forwarded: Optional[list[Optional[Forwarded]]] = None,
) -> None:
    """Answers every request exactly once through respond(), as soon as its outcome is known.

    Bad requests get INVALID_ARG naming the field, cancelled ones CANCELLED, ones past their deadline
    (stopped within a step) UNAVAILABLE, failures INTERNAL with the request id (the traceback goes to
    the server log, never to the client); none of them affects another request. A request the unary
    front forwarded (`forwarded`, per position) is also cancelled by its marker, and counted under the
    front's name.
    """
    started = time.monotonic()
    deadlines = [started + _timeout_s(request, request_timeout_s) for request in requests]
    answered = [False] * len(requests)
    answering = threading.Lock()
    forwarded = forwarded or [None] * len(requests)
    origins = [f.origin if f is not None else metrics.model for f in forwarded]

    def client_cancelled(position: int) -> bool:
        mark = forwarded[position]
        return requests[position].is_cancelled() or (mark is not None and mark.cancelled())

    def answer(position: int, outcome: str, response) -> None:
        with answering:  # once, whichever thread gets there first (see InFlight)
            if answered[position]:
                return
            answered[position] = True
        try:  # counted first: a client that has its answer also finds it in the metrics
            metrics.request(outcome, time.monotonic() - started, origins[position])
            respond(position, response)
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
                if not answered[positions[index]]:
                    on_progress(positions[index], done, total, now - clock["batch_started"])

    # A request answered already (by another thread: InFlight) is never touched again: Triton 2.51 frees
    # its response factory, and asking it is_cancelled() then crashes the server (measured: SIGSEGV).
    def stop_requested(index: int) -> bool:
        position = positions[index]
        return answered[position] or client_cancelled(position) or time.monotonic() > deadlines[position]

    def on_done(index, outcome):
        clock["batch_started"] = time.monotonic()
        position = positions[index]
        if answered[position]:
            return
        if client_cancelled(position):
            answer(position, "cancelled", error_response("request cancelled by the client",
                                                         pb_utils.TritonError.CANCELLED))
        elif isinstance(outcome, Cancelled) or time.monotonic() > deadlines[position]:
            # Past its time limit: its batch stopped, or ran on for live neighbours; either way not ok.
            budget = deadlines[position] - started
            answer(position, "expired", error_response(
                f"request exceeded its time limit of {budget:.3g} s", pb_utils.TritonError.UNAVAILABLE))
        elif isinstance(outcome, GroupBroken):
            answer(position, "failed", error_response(group_failure_message(str(outcome)),
                                                      pb_utils.TritonError.UNAVAILABLE))
        elif isinstance(outcome, InvalidRequest):  # valid alone, but not on this instance (context parallel)
            answer(position, "invalid", error_response(str(outcome), pb_utils.TritonError.INVALID_ARG))
        elif isinstance(outcome, EngineResult):
            computed = outcome.metadata["steps_computed"]
            metrics.steps(computed, outcome.metadata["steps"] - computed, origins[position])
            answer(position, "ok", result_response(outcome))
        else:
            fail(position, f"inference failed ({type(outcome).__name__})", outcome)

    def fail_all(message: str) -> None:
        for position in range(len(requests)):
            answer(position, "failed", error_response(message, pb_utils.TritonError.UNAVAILABLE))

    if in_flight is not None:
        in_flight.idle.clear()
        in_flight._fail_all = fail_all
    try:
        if in_flight is not None and in_flight.broken is not None:
            fail_all(in_flight.broken)  # the instance is about to restart
        else:
            engine.run(valid, on_step=on_step, is_cancelled=stop_requested, on_done=on_done)
    finally:
        if in_flight is not None:
            in_flight._fail_all = None
            in_flight.idle.set()
        metrics.batch_size(0)
        for position, done in enumerate(answered):  # a safety net: no request is ever left waiting
            if not done:
                fail(position, "the request was not completed", None)


class EngineModel:
    """The pipeline model's base (flux_kontext_stream; the unary front holds no engine): an engine on this
    instance's device(s), its metrics, and the server's per-request time limit. The subclass writes
    execute() around serve(), passing self.in_flight."""

    def initialize(self, args):
        faulthandler.enable()  # a native crash prints every thread's Python stack to the server log
        config = json.loads(args["model_config"])
        serving, engine_parameters = model_parameters(config)
        self.request_timeout_s = request_timeout_s(serving)
        self.in_flight = InFlight()
        self.instance_name = args["model_instance_name"]
        self.engine = load_engine(args, config, engine_parameters, on_group_failure=self.group_failed)
        self.metrics = KontextMetrics(args["model_name"])

    def group_failed(self, problem: str) -> None:
        """A worker of this instance's context-parallel group died or hung, or a call failed on rank 0.
        The group cannot be repaired in place (a collective may be stuck on a GPU): answer what is in
        flight, then end this stub process once execute() has returned (tritonserver 2.51 crashes when a
        stub exits inside execute(); one stuck for STUCK_EXECUTE_S is not waited for); the server's
        watchdog (kontext-serve) loads the instance again."""
        message = group_failure_message(problem)
        self.in_flight.broken = message
        pb_utils.Logger.log_error(f"{self.instance_name}: context-parallel group broken ({problem}); restarting")
        self.in_flight.fail_all(message)
        threading.Thread(target=self._exit_when_idle, name="group-failed-exit", daemon=True).start()

    def _exit_when_idle(self) -> None:
        try:
            self.in_flight.idle.wait(STUCK_EXECUTE_S)
            time.sleep(GROUP_FAILURE_FLUSH_S)  # let the answers leave before the process ends
        finally:
            os._exit(1)

    def finalize(self):
        self.metrics = None  # metric objects the interpreter frees at exit crash the stub (Triton 2.51, measured)
        engine, self.engine = self.engine, None
        engine.close()
        device = engine.device
        del engine
        free_device_memory(device)
