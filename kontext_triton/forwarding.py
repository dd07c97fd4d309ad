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

A BLS call whose pipeline process dies mid-request is never answered (measured on 2.51, reload or not):
the pipeline model first answers a forwarded request with an "accepted" event naming its process, and
the front answers UNAVAILABLE once that process is gone.

A finished BLS stream is kept for RETIRE_S before Python lets it go. The stub (2.51) holds each stream
twice, in Python and in a table its own C++ thread clears once the stream ends; whichever lets go last
frees the responses' numpy arrays. Freed on that thread, which has no Python thread state, they crash
the stub on Python 3.12 (measured: a segmentation fault in every front within seconds at 16 concurrent
requests and 4 pipeline instances; none with the streams kept). The table is cleared in the order of
the stub's other messages to the server (logs, cancellation checks), milliseconds after the stream's
end at the loads measured; RETIRE_S leaves a wide margin, at the cost of holding each answer's
shared memory that long.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import stat
import threading
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import triton_python_backend_utils as pb_utils

from kontext_engine import contract

from .responses import error_from_event, error_response
from .server.process import forwarding_directory

# BLS request parameters the front sets
FORWARDED_BY = "forwarded_by"  # the front's model name: the pipeline model labels the request's metrics with it
FORWARD_KEY = "forward_key"
CANCEL_TOKEN = "cancel_token"

POLL_S = 0.05  # how often the front checks its requests for a cancel and their pipeline process for life
RETIRE_S = 10.0  # how long a finished BLS stream is kept before Python lets it go (see the module docstring)
CLOSE_GRACE_S = 1.0  # at unload: the wait for open streams, and after the last one ended, before letting go
_TOKEN = re.compile(r"[A-Za-z0-9_-]{22,64}")
_KEY = re.compile(r"[A-Za-z0-9_-]{43,64}")
_MODEL_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def server_directory() -> Path:
    """Shared by the stubs of one tritonserver (their parent); the launcher removes it when the server ends."""
    return forwarding_directory(os.getppid())


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
        self.key = self.current_key()
        self._warned = False

    def current_key(self) -> str:
        """The directory's key, created by the first stub to ask (a link is atomic: one writer wins); the
        directory too, should a cleaner of /tmp have removed it."""
        _private_directory(self.directory)
        path = self.directory / "key"
        if not path.exists():
            candidate = self.directory / f"key.{os.getpid()}"
            descriptor = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "w") as file:
                file.write(secrets.token_urlsafe(32))
            try:
                os.link(candidate, path)
            except FileExistsError:
                pass
            finally:
                candidate.unlink()
        key = path.read_text()
        if not _KEY.fullmatch(key):
            raise RuntimeError(f"{path} does not hold a forwarding key; remove it and restart")
        return key

    def marker(self, token: str) -> Path:
        if not _TOKEN.fullmatch(token):
            raise ValueError("malformed cancel token")
        return self.directory / f"cancel-{token}"

    def forwarded(self, parameters: dict) -> Optional[Forwarded]:
        """The request's forwarding, if a front of this server sent it (it holds the key); else None.
        Never raises: whatever a client sends, it only decides how its own request is treated."""
        key, origin, token = (parameters.get(name) for name in (FORWARD_KEY, FORWARDED_BY, CANCEL_TOKEN))
        if not all(isinstance(value, str) and value.isascii() for value in (key, origin, token)):
            return None
        if not _MODEL_NAME.fullmatch(origin) or not _TOKEN.fullmatch(token):
            return None
        if not self._holds_key(key):
            return None
        return Forwarded(origin, self.marker(token))

    def _holds_key(self, key: str) -> bool:
        if secrets.compare_digest(key.encode(), self.key.encode()):
            return True
        try:  # the file may have been recreated (a cleaned /tmp, a reloaded stub): read it again
            self.key = self.current_key()
        except (OSError, RuntimeError):
            pass
        if secrets.compare_digest(key.encode(), self.key.encode()):
            return True
        if not self._warned:
            self._warned = True
            pb_utils.Logger.log_warn(f"a request claimed to be forwarded without this server's key ({self.directory}); "
                                     "treated as the client's own (further ones are not logged)")
        return False


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


def request_parameters(request) -> dict:
    try:
        parameters = json.loads(request.parameters() or "{}")
    except ValueError:
        return {}
    return parameters if isinstance(parameters, dict) else {}


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
        self._retired: list[_Call] = []  # answered calls, kept (request and answer dropped) for their stream

    @classmethod
    def from_args(cls, args: dict) -> "Front":
        config = json.loads(args["model_config"])
        pipeline_model = config.get("parameters", {}).get("pipeline_model", {}).get("string_value")
        if not pipeline_model:
            raise ValueError(f"{config['name']}: parameter pipeline_model (the model to forward to) is not set")
        return cls(config["name"], pipeline_model, [i["name"] for i in config["input"]],
                   [o["name"] for o in config["output"]], ForwardingChannel())

    def execute(self, requests: list) -> list:
        self._retired = [call for call in self._retired if not call.releasable(RETIRE_S)]
        key = self.channel.current_key()
        calls = [_Call(self, request, key) for request in requests]
        try:
            for call in calls:
                call.thread.start()
            while any(call.waiting() for call in calls):
                for call in calls:
                    call.check()
                time.sleep(POLL_S)
        finally:
            for call in calls:
                call.marker.unlink(missing_ok=True)
            self._retired.extend(calls)
        responses = [call.response for call in calls]
        for call in calls:
            call.request = call.response = None  # the thread needs neither once its request is answered
        return responses

    def close(self) -> None:
        """At unload: lets every kept stream go while the stub can still free them (at interpreter exit
        the garbage collector would, and crash the stub on Python 3.12), once open streams ended (up to
        CLOSE_GRACE_S) and the stub's thread had CLOSE_GRACE_S to clear its table."""
        deadline = time.monotonic() + CLOSE_GRACE_S
        for call in self._retired:
            if call.thread.ident is not None:
                call.thread.join(max(0.0, deadline - time.monotonic()))
        last_end = max((call.ended_at for call in self._retired if call.ended_at is not None), default=None)
        if last_end is not None:
            time.sleep(max(0.0, last_end + CLOSE_GRACE_S - time.monotonic()))
        self._retired.clear()


class _Call:
    """One forwarded request: its BLS stream (on a thread), its cancel marker, its answer (the first
    final outcome the stream brings: a result, an error event, or Triton's own error)."""

    def __init__(self, front: Front, request, key: str):
        self.front = front
        self.request = request
        self.request_id = request.request_id() or "-"
        token = secrets.token_urlsafe(16)
        self.marker = front.channel.marker(token)
        self.parameters = {FORWARDED_BY: front.name, FORWARD_KEY: key, CANCEL_TOKEN: token}
        self.response = error_response(f"{front.pipeline_model} sent no answer (request id {self.request_id})",
                                       pb_utils.TritonError.INTERNAL)
        self.answered = False
        self.pipeline_pid: Optional[int] = None
        self.stream = None  # the BLS response iterator, kept (with its responses) until releasable()
        self.ended_at: Optional[float] = None
        self.thread = threading.Thread(target=self._forward, daemon=True)

    def waiting(self) -> bool:
        return self.thread.is_alive() and not self.answered

    def releasable(self, after_s: float) -> bool:
        """Its stream ended more than after_s ago, or its thread never started."""
        if self.thread.ident is None:
            return True
        return self.ended_at is not None and time.monotonic() - self.ended_at > after_s

    def check(self) -> None:
        """Runs in execute()'s thread, so only before execute() answers the request (asking is_cancelled()
        of an answered request crashes Triton 2.51)."""
        if not self.waiting():
            return
        try:
            if not self.marker.exists() and self.request.is_cancelled():
                self.marker.touch()
            if self.pipeline_pid is not None and not _alive(self.pipeline_pid):
                self._answer(error_response(
                    f"the {self.front.pipeline_model} process computing this request died; it is being restarted, "
                    "retry shortly", pb_utils.TritonError.UNAVAILABLE))
        except Exception:  # a check that fails must not strand the other requests of this execute()
            pb_utils.Logger.log_error(f"request {self.request_id}: forwarding check failed\n{traceback.format_exc()}")

    def _answer(self, response) -> None:
        if not self.answered:
            self.answered = True
            self.response = response

    def _forward(self) -> None:
        try:
            inputs = [pb_utils.Tensor(name, tensor.as_numpy()) for name in self.front.inputs
                      if (tensor := pb_utils.get_input_tensor_by_name(self.request, name)) is not None]
            call = pb_utils.InferenceRequest(
                model_name=self.front.pipeline_model, inputs=inputs, parameters=self.parameters,
                requested_output_names=[contract.EVENT.name, *self.front.outputs],
                request_id=self.request.request_id(), timeout=self.request.timeout())
            self.stream = call.exec(decoupled=True)
            for response in self.stream:
                self._take(response)
        except Exception:
            pb_utils.Logger.log_error(f"request {self.request_id}: forwarding to {self.front.pipeline_model} "
                                      f"failed\n{traceback.format_exc()}")
            self._answer(error_response(f"forwarding the request failed (request id {self.request_id}); "
                                        "the server log has the details", pb_utils.TritonError.INTERNAL))
        finally:
            self.ended_at = time.monotonic()

    def _take(self, response) -> None:
        if response.has_error():
            # Triton's own answer for the pipeline model (its queue full or timed out, the model not loaded,
            # its stub unhealthy): all of them pass with a retry.
            self._answer(error_response(f"{self.front.pipeline_model} could not take the request: "
                                        f"{response.error().message()}", pb_utils.TritonError.UNAVAILABLE))
            return
        event_tensor = pb_utils.get_output_tensor_by_name(response, contract.EVENT.name)
        if event_tensor is None:
            return  # the empty final response that closes a decoupled stream
        event = json.loads(event_tensor.as_numpy().reshape(-1)[0])
        if event.get("type") == "accepted":
            self.pipeline_pid = int(event["pid"])
        elif event.get("type") == "error":
            self._answer(error_from_event(event))
        elif event.get("type") == "result":
            self._answer(pb_utils.InferenceResponse(
                output_tensors=[pb_utils.get_output_tensor_by_name(response, name) for name in self.front.outputs]))


def _alive(pid: int) -> bool:
    """A process that exited stays a zombie until tritonserver reaps it: that counts as gone."""
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat_line.rsplit(")", 1)[1].split()[0] not in ("Z", "X")
