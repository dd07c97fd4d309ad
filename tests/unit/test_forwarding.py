"""The unary front (kontext_triton/forwarding.py) without Triton: what it answers for each thing the
pipeline model's stream can bring, cancellation markers, a pipeline process that dies, the private
directory and its key, and that the front never imports torch.

triton_python_backend_utils exists only inside the backend stub: a stand-in with the names the front
uses is installed here; each BLS call plays a scripted stream.
"""

import importlib
import json
import os
import subprocess
import sys
import threading
import time
import types
import weakref

import numpy as np
import pytest

from tests.unit.triton_stand_ins import RecordingLogger as Logger

SECRET_PATH = "/opt/private/weights/transformer.py"
CODES = ("INVALID_ARG", "INTERNAL", "CANCELLED", "UNAVAILABLE", "UNSUPPORTED", "NOT_FOUND")


class TritonError:
    INVALID_ARG, INTERNAL, CANCELLED, UNAVAILABLE, UNSUPPORTED, NOT_FOUND = CODES

    def __init__(self, message, code=INTERNAL):
        self._message, self._code = message, code

    def message(self):
        return self._message

    def code(self):
        return self._code


class Tensor:
    def __init__(self, name, array):
        self.name, self.array = name, np.asarray(array)

    def as_numpy(self):
        return self.array


class Response:
    def __init__(self, output_tensors=(), error=None):
        self.outputs, self._error = list(output_tensors), error

    def has_error(self):
        return self._error is not None

    def error(self):
        return self._error


def event(payload, *outputs):
    return Response([Tensor("event", np.array([json.dumps(payload)], dtype=np.object_)), *outputs])


class Request:
    def __init__(self, request_id, cancel_after_s=None, timeout_us=0):
        self.id, self.timeout_us = request_id, timeout_us
        self.cancel_at = None if cancel_after_s is None else time.monotonic() + cancel_after_s
        self.tensors = {"prompt": Tensor("prompt", np.array([[b"x"]], dtype=np.object_))}

    def request_id(self):
        return self.id

    def timeout(self):
        return self.timeout_us

    def is_cancelled(self):
        return self.cancel_at is not None and time.monotonic() > self.cancel_at


class Pipeline:
    """Plays one scripted stream per BLS call, chosen by the forwarded request's id."""

    def __init__(self, scripts):
        self.scripts, self.calls = scripts, []

    def request_class(self):
        pipeline = self

        class InferenceRequest:
            def __init__(self, **call):
                pipeline.calls.append(call)
                self.call = call

            def exec(self, decoupled):
                assert decoupled
                return pipeline.scripts[self.call["request_id"]](self.call)

        return InferenceRequest


@pytest.fixture
def forwarding(monkeypatch, tmp_path):
    utils = types.ModuleType("triton_python_backend_utils")
    utils.TritonError, utils.Tensor, utils.InferenceResponse, utils.Logger = TritonError, Tensor, Response, Logger
    utils.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    utils.get_output_tensor_by_name = lambda response, name: next((t for t in response.outputs if t.name == name), None)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    Logger.lines = []
    for name in ("kontext_triton.forwarding", "kontext_triton.responses"):
        sys.modules.pop(name, None)
    module = importlib.import_module("kontext_triton.forwarding")
    yield module, utils
    for name in ("kontext_triton.forwarding", "kontext_triton.responses"):
        sys.modules.pop(name, None)


def front_for(forwarding, tmp_path, scripts):
    module, utils = forwarding
    pipeline = Pipeline(scripts)
    utils.InferenceRequest = pipeline.request_class()
    channel = module.ForwardingChannel(tmp_path / "channel")
    front = module.Front("flux_kontext", "flux_kontext_stream", ["prompt", "image"], ["output_image", "metadata"],
                         channel)
    return front, pipeline


def test_each_request_gets_the_first_outcome_its_stream_brings_with_its_code(forwarding, tmp_path):
    image = Tensor("output_image", np.array([b"png"], dtype=np.object_))
    metadata = Tensor("metadata", np.array([b"{}"], dtype=np.object_))
    accepted = {"type": "accepted", "pid": os.getpid()}
    scripts = {
        "ok": lambda call: iter([event(accepted), event({"type": "result"}, image, metadata), Response()]),
        "invalid": lambda call: iter([event(accepted), event({"type": "error", "code": "INVALID_ARG",
                                                             "message": "width: must be a multiple of 16"})]),
        "refused": lambda call: iter([Response(error=TritonError("Exceeds maximum queue size"))]),
        "late result": lambda call: iter([event({"type": "error", "code": "CANCELLED", "message": "cancelled"}),
                                          event({"type": "result"}, image, metadata)]),
        "odd code": lambda call: iter([event({"type": "error", "code": "SHUTDOWN_NOW", "message": "?"})]),
        "broken": lambda call: (_ for _ in ()).throw(RuntimeError(f"{SECRET_PATH}: no such file")),
        "silent": lambda call: iter([Response()]),
    }
    front, pipeline = front_for(forwarding, tmp_path, scripts)
    answers = dict(zip(scripts, front.execute([Request(name, timeout_us=5_000_000) for name in scripts])))

    assert [t.name for t in answers["ok"].outputs] == ["output_image", "metadata"] and not answers["ok"].has_error()
    assert (answers["invalid"].error().code(), answers["invalid"].error().message()) == (
        "INVALID_ARG", "width: must be a multiple of 16")
    refused = answers["refused"].error()
    assert refused.code() == "UNAVAILABLE" and "Exceeds maximum queue size" in refused.message()
    assert answers["late result"].error().code() == "CANCELLED"  # nothing after the first outcome counts
    assert answers["odd code"].error().code() == "INTERNAL"
    broken = answers["broken"].error()
    assert broken.code() == "INTERNAL" and "request id broken" in broken.message() and SECRET_PATH not in broken.message()
    assert any(SECRET_PATH in line for line in Logger.lines)  # the log has the details
    assert answers["silent"].error().code() == "INTERNAL" and "sent no answer" in answers["silent"].error().message()

    call = next(c for c in pipeline.calls if c["request_id"] == "ok")
    assert call["model_name"] == "flux_kontext_stream" and call["timeout"] == 5_000_000
    assert [t.name for t in call["inputs"]] == ["prompt"]  # only what the client sent
    assert call["parameters"]["forward_key"] == front.channel.key and call["parameters"]["forwarded_by"] == "flux_kontext"
    assert front.channel.forwarded(call["parameters"]).origin == "flux_kontext"
    assert len({c["parameters"]["cancel_token"] for c in pipeline.calls}) == len(scripts)


class Stream:
    """A BLS response iterator whose lifetime a test can watch."""

    def __init__(self, responses):
        self.responses = iter(responses)

    def __iter__(self):
        return self

    def __next__(self):
        return next(self.responses)


def test_the_front_lets_a_finished_stream_go_only_after_a_grace_period_or_at_close(forwarding, tmp_path, monkeypatch):
    """Triton 2.51's stub crashes on Python 3.12 when its own C++ thread, not Python, drops a finished stream
    last (measured): the front keeps each stream RETIRE_S after it ended, then lets it go in execute()."""
    module, _ = forwarding
    monkeypatch.setattr(module, "RETIRE_S", 0.2)
    monkeypatch.setattr(module, "CLOSE_GRACE_S", 0.5)
    streams = {}

    def script(call):
        streams[call["request_id"]] = stream = Stream([event({"type": "result"}), Response()])
        return stream

    front, _ = front_for(forwarding, tmp_path, {"first": script, "second": script, "third": script})
    front.execute([Request("first")])
    first = weakref.ref(streams.pop("first"))
    front.execute([Request("second")])  # right after: the first stream is kept
    assert first() is not None
    assert all(call.request is None and call.response is None for call in front._retired)  # only the stream
    time.sleep(0.5)
    front.execute([Request("third")])  # past the grace period: let go
    assert first() is None
    second, third = weakref.ref(streams.pop("second")), weakref.ref(streams.pop("third"))
    assert third() is not None
    front.close()
    assert second() is None and third() is None


def test_a_cancel_drops_a_marker_that_lives_until_execute_answers(forwarding, tmp_path):
    module, _ = forwarding
    seen = []

    def stops_at_the_marker(call):
        marker = module.ForwardingChannel(tmp_path / "channel").marker(call["parameters"]["cancel_token"])
        deadline = time.monotonic() + 10
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        seen.append(marker)
        yield event({"type": "error", "code": "CANCELLED", "message": "request cancelled by the client"})

    front, _ = front_for(forwarding, tmp_path, {"gone": stops_at_the_marker})
    started = time.monotonic()
    (answer,) = front.execute([Request("gone", cancel_after_s=0.2)])
    assert answer.error().code() == "CANCELLED" and time.monotonic() - started < 2
    assert seen and seen[0].parent == tmp_path / "channel" and not seen[0].exists()  # removed once answered


def test_a_request_whose_pipeline_process_died_is_answered_unavailable(forwarding, tmp_path):
    """Triton 2.51 never ends a BLS stream whose pipeline stub died (measured): the front watches the
    process that accepted the request."""
    doomed = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    never = threading.Event()

    def hangs_after_accepting(call):
        yield event({"type": "accepted", "pid": doomed.pid})
        never.wait(30)

    front, _ = front_for(forwarding, tmp_path, {"orphaned": hangs_after_accepting})
    threading.Timer(0.3, doomed.kill).start()
    started = time.monotonic()
    try:
        (answer,) = front.execute([Request("orphaned")])
    finally:
        never.set()
        doomed.wait()
    assert answer.error().code() == "UNAVAILABLE" and "died" in answer.error().message()
    assert time.monotonic() - started < 5


def test_only_a_holder_of_the_key_forwards_and_markers_stay_in_a_private_directory(forwarding, tmp_path):
    module, _ = forwarding
    front, pipeline = module.ForwardingChannel(tmp_path / "channel"), module.ForwardingChannel(tmp_path / "channel")
    assert front.key == pipeline.key and len(front.key) >= 43  # the second one read the first one's key
    assert os.stat(tmp_path / "channel").st_mode & 0o777 == 0o700
    assert os.stat(tmp_path / "channel" / "key").st_mode & 0o777 == 0o600
    token = "t" * 22
    forwarded = pipeline.forwarded({"forwarded_by": "flux_kontext", "forward_key": front.key, "cancel_token": token})
    assert forwarded.origin == "flux_kontext" and forwarded.marker.parent == tmp_path / "channel"
    for claim in ({"forwarded_by": "flux_kontext", "forward_key": "guess" * 9, "cancel_token": token},
                  {"forwarded_by": "flux_kontext", "forward_key": "é" * 43, "cancel_token": token},
                  {"forwarded_by": "flux_kontext", "cancel_token": token},
                  {"forwarded_by": "x" * 500, "forward_key": front.key, "cancel_token": token},  # label cardinality
                  {"forwarded_by": "flux_kontext", "forward_key": front.key, "cancel_token": "../../etc/passwd"},
                  {"forwarded_by": 1, "forward_key": front.key, "cancel_token": token}):
        assert pipeline.forwarded(claim) is None, claim  # never an exception: a bad claim harms no neighbour
    with pytest.raises(ValueError):
        front.marker("../key")
    (tmp_path / "channel" / "key").unlink()  # a cleaned /tmp: the next stub to start writes a new key
    renewed = module.ForwardingChannel(tmp_path / "channel").key
    assert renewed != front.key
    assert pipeline.forwarded({"forwarded_by": "flux_kontext", "forward_key": renewed, "cancel_token": token})


@pytest.mark.parametrize("planted", ["shared", "link"])
def test_a_directory_others_could_enter_is_refused(forwarding, tmp_path, planted):
    module, _ = forwarding
    path = tmp_path / "channel"
    if planted == "shared":
        path.mkdir(mode=0o777)
        path.chmod(0o777)
    else:
        (tmp_path / "elsewhere").mkdir(mode=0o700)
        path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RuntimeError, match="not a directory private"):
        module.ForwardingChannel(path)


def test_the_front_never_imports_torch(tmp_path):
    """Eight forwarder processes per server: each would otherwise hold torch's ~0.5 GB and seconds of import."""
    (tmp_path / "triton_python_backend_utils.py").write_text("")
    probe = ("import sys; sys.path.insert(0, sys.argv[1]); import kontext_triton.forwarding; "
             "print(sorted(m for m in ('torch', 'diffusers', 'PIL') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", probe, str(tmp_path)], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
