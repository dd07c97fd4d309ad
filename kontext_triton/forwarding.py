"""One pipeline for both APIs: the unary model forwards each request to the streaming model.

flux_kontext_stream is the only model that loads the pipeline. flux_kontext (non-decoupled, for HTTP,
gRPC infer() and perf_analyzer) is a front on the CPU without torch: it sends each request to
flux_kontext_stream through BLS, so requests from both APIs meet in one dynamic batcher, on one copy of
the weights per GPU.

Two things Triton 2.51's BLS cannot do are done through a directory private to this server's stubs:
- cancelling a decoupled call (that arrived in 2.57): a cancelled front request's marker file, named by
  the request's unguessable token, stops it at the pipeline model's next step;
- carrying an error's code (every BLS error arrives as INTERNAL): the pipeline model answers a forwarded
  request's failure with a final `event` {"type": "error", "code": ..., "message": ...}.
A request counts as forwarded only with the key kept in that directory, so no client can pose as the
front (to mislabel metrics, or to get errors as events).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np
import triton_python_backend_utils as pb_utils

from kontext_engine import contract

# BLS request parameters the front sets
FORWARDED_BY = "forwarded_by"  # the front's model name: the pipeline model labels the request's metrics with it
FORWARD_KEY = "forward_key"
CANCEL_TOKEN = "cancel_token"

CANCEL_POLL_S = 0.05  # how often the front asks Triton whether its requests were cancelled
ERROR_CODES = ("INVALID_ARG", "UNAVAILABLE", "CANCELLED", "INTERNAL", "UNSUPPORTED", "NOT_FOUND")
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def server_directory() -> Path:
    """Shared by the stubs of one tritonserver (their parent), per user."""
    return Path(tempfile.gettempdir()) / f"kontext-forwarding-{os.getuid()}-{os.getppid()}"


@dataclass(frozen=True)
class Forwarded:
    """A request the front forwarded: whose it is, and where its cancellation would appear."""

    origin: str
    marker: Path

    def cancelled(self) -> bool:
        return self.marker.exists()


class ForwardingChannel:
    """The private directory both models use: its key, and one cancel marker per cancelled request."""

    def __init__(self, directory: Optional[Path] = None):
        self.directory = _private_directory(directory or server_directory())
        self.key = _shared_key(self.directory)

    def marker(self, token: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise ValueError("malformed cancel token")
        return self.directory / f"cancel-{token}"

    def forwarded(self, parameters: dict) -> Optional[Forwarded]:
        """The request's forwarding, if a front of this server sent it (it holds the key); else None."""
        key, origin, token = (parameters.get(name) for name in (FORWARD_KEY, FORWARDED_BY, CANCEL_TOKEN))
        if not all(isinstance(value, str) for value in (key, origin, token)):
            return None
        if not secrets.compare_digest(key, self.key) or not _MODEL_NAME.fullmatch(origin) or not _TOKEN.fullmatch(token):
            return None
        return Forwarded(origin, self.marker(token))


def _private_directory(path: Path) -> Path:
    """Creates path (0700) or accepts it only if it already is a directory of this user that nobody else
    can enter: another user's directory, or a link planted in /tmp, is refused."""
    try:
        path.mkdir(mode=0o700)
    except FileExistsError:
        pass
    info = path.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        raise RuntimeError(f"{path} is not a directory private to this user; refusing to forward requests through it")
    return path


def _shared_key(directory: Path) -> str:
    """The directory's key; the first stub to get here creates it (a link is atomic: one writer wins)."""
    path = directory / "key"
    if not path.exists():
        candidate = directory / f"key.{os.getpid()}"
        candidate.write_text(secrets.token_urlsafe(32))
        try:
            os.link(candidate, path)
        except FileExistsError:
            pass
        finally:
            candidate.unlink()
    return path.read_text()


def request_parameters(request) -> dict:
    try:
        parameters = json.loads(request.parameters() or "{}")
    except ValueError:
        return {}
    return parameters if isinstance(parameters, dict) else {}


def error_event(message: str, code) -> "pb_utils.Tensor":
    """A forwarded request's failure, as the pipeline model's final event (see the module docstring)."""
    name = next((n for n in ERROR_CODES if getattr(pb_utils.TritonError, n) == code), "INTERNAL")
    payload = {"type": "error", "code": name, "message": message}
    return pb_utils.Tensor(contract.EVENT.name, np.array([json.dumps(payload)], dtype=np.object_))


class Front:
    """The unary model's execute(): forwards every request at once and answers each with what the
    pipeline model answered (its outputs, or its error with the error's code)."""

    def __init__(self, name: str, pipeline_model: str, inputs: list[str], outputs: list[str],
                 channel: ForwardingChannel):
        self.name = name
        self.pipeline_model = pipeline_model
        self.inputs = inputs
        self.outputs = outputs
        self.channel = channel

    @classmethod
    def from_args(cls, args: dict) -> "Front":
        config = json.loads(args["model_config"])
        pipeline_model = config.get("parameters", {}).get("pipeline_model", {}).get("string_value")
        if not pipeline_model:
            raise ValueError(f"{config['name']}: parameter pipeline_model (the model to forward to) is not set")
        return cls(config["name"], pipeline_model, [i["name"] for i in config["input"]],
                   [o["name"] for o in config["output"]], ForwardingChannel())

    def execute(self, requests: list) -> list:
        calls = [_Call(self, request) for request in requests]
        for call in calls:
            call.thread.start()
        try:
            while any(call.thread.is_alive() for call in calls):
                for call in calls:
                    call.cancel_if_asked()
                time.sleep(CANCEL_POLL_S)
        finally:
            for call in calls:
                call.marker.unlink(missing_ok=True)
        return [call.response for call in calls]


class _Call:
    """One forwarded request: its BLS stream (on a thread), its cancel marker, its answer."""

    def __init__(self, front: Front, request):
        self.front = front
        self.request = request
        token = secrets.token_urlsafe(16)
        self.marker = front.channel.marker(token)
        self.parameters = {FORWARDED_BY: front.name, FORWARD_KEY: front.channel.key, CANCEL_TOKEN: token}
        self.response = _error(f"{front.pipeline_model} sent no answer", pb_utils.TritonError.INTERNAL)
        self.thread = threading.Thread(target=self._forward, daemon=True)

    def cancel_if_asked(self) -> None:
        # Only while the thread runs, so never after execute() answered the request.
        if self.thread.is_alive() and not self.marker.exists() and self.request.is_cancelled():
            self.marker.touch()

    def _forward(self) -> None:
        try:
            inputs = [pb_utils.Tensor(name, tensor.as_numpy()) for name in self.front.inputs
                      if (tensor := pb_utils.get_input_tensor_by_name(self.request, name)) is not None]
            call = pb_utils.InferenceRequest(
                model_name=self.front.pipeline_model, inputs=inputs, parameters=self.parameters,
                requested_output_names=[contract.EVENT.name, *self.front.outputs], timeout=self.request.timeout())
            for response in call.exec(decoupled=True):
                self._take(response)
        except Exception:
            pb_utils.Logger.log_error(f"request {self.request.request_id() or '-'}: forwarding to "
                                      f"{self.front.pipeline_model} failed\n{traceback.format_exc()}")
            self.response = _error(f"forwarding the request failed (request id {self.request.request_id() or '-'}); "
                                   "the server log has the details", pb_utils.TritonError.INTERNAL)

    def _take(self, response) -> None:
        if response.has_error():  # Triton refused it (queue full or timed out, model not loaded): retryable
            self.response = _error(f"{self.front.pipeline_model} could not take the request: "
                                   f"{response.error().message()}", pb_utils.TritonError.UNAVAILABLE)
            return
        event_tensor = pb_utils.get_output_tensor_by_name(response, contract.EVENT.name)
        if event_tensor is None:
            return  # the empty final response that closes a decoupled stream
        event = json.loads(event_tensor.as_numpy().reshape(-1)[0])
        if event.get("type") == "error":
            code = event["code"] if event.get("code") in ERROR_CODES else "INTERNAL"
            self.response = _error(event["message"], getattr(pb_utils.TritonError, code))
        elif event.get("type") == "result":
            self.response = pb_utils.InferenceResponse(
                output_tensors=[pb_utils.get_output_tensor_by_name(response, name) for name in self.front.outputs])


def _error(message: str, code) -> "pb_utils.InferenceResponse":
    return pb_utils.InferenceResponse(error=pb_utils.TritonError(message, code))
