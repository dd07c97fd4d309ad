"""kontext_triton.serving.serve() answers every request exactly once, and a failure never shows the
client a traceback or a server path (those go to the server log with the request id); a request the
unary front forwarded is cancelled by its marker and counted under the front's name.

triton_python_backend_utils exists only inside the backend stub, so a small stand-in with the same
names is installed here; the engine side is a real KontextEngine-shaped object that fails on purpose.
"""

import importlib
import sys
import time
import types

import numpy as np
import pytest

from kontext_engine import EngineResult
from tests.unit.triton_stand_ins import RecordingLogger as FakeLogger

SECRET_PATH = "/opt/private/weights/transformer.py"


class FakeTritonError:
    INVALID_ARG, INTERNAL, CANCELLED, UNAVAILABLE = "INVALID_ARG", "INTERNAL", "CANCELLED", "UNAVAILABLE"

    def __init__(self, message, code):
        self.text, self.code = message, code


class FakeResponse:
    def __init__(self, output_tensors=None, error=None):
        self.outputs, self.error = output_tensors, error


TRITON_SIDE = ("kontext_triton.serving", "kontext_triton.forwarding", "kontext_triton.responses")


@pytest.fixture
def serving(monkeypatch):
    utils = types.ModuleType("triton_python_backend_utils")
    utils.TritonError, utils.InferenceResponse, utils.Logger = FakeTritonError, FakeResponse, FakeLogger
    utils.Tensor = lambda name, array: (name, array)
    utils.MetricFamily = None
    utils.get_input_tensor_by_name = lambda request, name: request.tensors.get(name)
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", utils)
    FakeLogger.lines = []
    for name in TRITON_SIDE:
        sys.modules.pop(name, None)
    yield importlib.import_module("kontext_triton.serving")
    for name in TRITON_SIDE:
        sys.modules.pop(name, None)


class Tensor:
    def __init__(self, value):
        self.value = value

    def as_numpy(self):
        if isinstance(self.value, Exception):
            raise self.value
        return np.array([[self.value]], dtype=np.object_ if isinstance(self.value, bytes) else None)


class Request:
    def __init__(self, request_id, timeout_us=0, **tensors):
        self.id, self.timeout_us, self.tensors = request_id, timeout_us, {k: Tensor(v) for k, v in tensors.items()}

    def request_id(self):
        return self.id

    def is_cancelled(self):
        return False

    def timeout(self):
        return self.timeout_us


class Metrics:
    model = "pipeline"

    def __init__(self):
        self.outcomes, self.origins = [], []

    def request(self, outcome, seconds, origin):
        self.outcomes.append(outcome)
        self.origins.append(origin)

    def step(self, seconds):
        pass

    def steps(self, computed, skipped, origin):
        pass

    def batch_size(self, size):
        pass


class Engine:
    """Fails every batch whose prompt is 'fail' with an error quoting a server path; else succeeds."""

    def run(self, requests, on_step=None, is_cancelled=None, on_done=None):
        for index, request in enumerate(requests):
            if request.prompt == "fail":
                on_done(index, RuntimeError(f"{SECRET_PATH}: CUDA out of memory"))
            elif request.prompt == "slow":
                time.sleep(0.05)  # a batch that ran on for a live neighbour past this request's limit
                on_done(index, EngineResult(b"png", {"steps": request.steps, "steps_computed": request.steps}))
            elif request.prompt == "crash":
                raise RuntimeError(f"{SECRET_PATH}: the engine itself broke")
            else:
                on_done(index, EngineResult(b"png", {"steps": request.steps, "steps_computed": request.steps}))


def serve_all(serving, requests):
    answers = {}
    metrics = Metrics()

    def respond(position, response):
        assert position not in answers, "answered twice"
        answers[position] = response

    try:
        serving.serve(Engine(), metrics, requests, respond, request_timeout_s=60)
    finally:
        assert sorted(answers) == list(range(len(requests)))  # every request answered, even on a crash
    return [answers[i] for i in range(len(requests))], metrics.outcomes


def test_a_failed_batch_is_internal_with_the_request_id_and_no_traceback(serving):
    (ok, failed), outcomes = serve_all(serving, [Request("a", prompt=b"fine"), Request("b", prompt=b"fail")])
    assert ok.error is None and outcomes == ["ok", "failed"]
    assert failed.error.code == "INTERNAL"
    assert "request id b" in failed.error.text and "RuntimeError" in failed.error.text
    assert SECRET_PATH not in failed.error.text and "Traceback" not in failed.error.text
    assert any(SECRET_PATH in line and "request b" in line for line in FakeLogger.lines)  # the log has it


def test_an_unexpected_parse_error_fails_only_that_request(serving):
    broken = Request("c", prompt=ValueError(f"{SECRET_PATH} could not be mapped"))
    (bad, good), outcomes = serve_all(serving, [broken, Request("d", prompt=b"fine")])
    assert bad.error.code == "INTERNAL" and SECRET_PATH not in bad.error.text
    assert good.error is None and outcomes == ["failed", "ok"]


def test_a_crash_inside_the_engine_still_answers_everyone(serving):
    requests = [Request("e", prompt=b"x", steps=np.int32(0)), Request("f", prompt=b"crash")]
    with pytest.raises(RuntimeError):
        serve_all(serving, requests)
    assert any("request f" in line for line in FakeLogger.lines)


def test_a_request_past_its_time_limit_is_not_answered_ok_even_when_its_batch_finished(serving):
    (late, fine), outcomes = serve_all(serving, [Request("g", timeout_us=10_000, prompt=b"slow"),
                                                 Request("h", prompt=b"slow")])
    assert late.error.code == "UNAVAILABLE" and "time limit of 0.01 s" in late.error.text  # not "of 0 s"
    assert fine.error is None and outcomes == ["expired", "ok"]


def test_a_broken_gpu_group_answers_what_is_in_flight_once(serving):
    """The group's monitor thread fails the requests of the running execute(); the main thread's later
    answers for them are dropped (each request answered once)."""
    in_flight = serving.InFlight()

    class StuckEngine:
        def run(self, requests, on_step=None, is_cancelled=None, on_done=None):
            in_flight.fail_all(serving.group_failure_message("worker rank 1 exited with code -9"))
            on_done(0, EngineResult(b"png", {"steps": 1, "steps_computed": 1}))

    answers = []
    serving.serve(StuckEngine(), Metrics(), [Request("i", prompt=b"x")], lambda p, r: answers.append(r),
                  request_timeout_s=60, in_flight=in_flight)
    (answer,) = answers
    assert answer.error.code == "UNAVAILABLE" and "worker rank 1 exited" in answer.error.text
    in_flight.fail_all("after execute() returned: nothing in flight")  # a no-op, not an exception
    assert len(answers) == 1


def test_an_instance_owns_a_disjoint_gpu_set(serving):
    def devices(kind, name="flux_kontext_0_0", device_id="0", degree=2, gpus=4):
        args = {"model_instance_kind": kind, "model_instance_name": name, "model_instance_device_id": device_id}
        return [str(d) for d in serving.instance_devices(args, degree, gpus)]

    assert devices("GPU", device_id="3", degree=1) == ["cuda:3"]  # one GPU: the one Triton assigned
    assert devices("MODEL", name="flux_kontext_0_0") == ["cuda:0", "cuda:1"]
    assert devices("MODEL", name="flux_kontext_0_1") == ["cuda:2", "cuda:3"]
    assert devices("CPU", degree=2) == ["cpu", "cpu"]
    with pytest.raises(ValueError, match="needs GPUs 4..5; 4 visible"):
        devices("MODEL", name="flux_kontext_0_2")
    with pytest.raises(ValueError, match="KIND_MODEL"):
        devices("GPU", degree=2)  # Triton would start one instance per listed GPU
    args = {"model_instance_kind": "MODEL", "model_instance_name": "flux_kontext_1_0", "model_instance_device_id": "0"}
    with pytest.raises(ValueError, match="exactly one instance_group"):  # indices restart in each group
        serving.instance_devices(args, 2, 4, groups=2)


def test_a_forwarded_request_stops_at_its_marker_and_counts_under_its_front(serving, tmp_path):
    from kontext_triton.forwarding import Forwarded

    marker = tmp_path / "cancel-abc"
    checks = []

    class StepEngine:
        def run(self, requests, on_step=None, is_cancelled=None, on_done=None):
            for step in range(1, 11):
                if step == 3:
                    marker.touch()  # the front saw its client cancel
                if any(is_cancelled(index) for index in range(len(requests))):
                    checks.append(step)
                    break
            on_done(0, EngineResult(b"png", {"steps": 10, "steps_computed": 3}))
            on_done(1, EngineResult(b"png", {"steps": 10, "steps_computed": 3}))

    metrics, answers = Metrics(), {}
    serving.serve(StepEngine(), metrics, [Request("j", prompt=b"x"), Request("k", prompt=b"y")],
                  lambda position, response: answers.update({position: response}), request_timeout_s=60,
                  forwarded=[Forwarded("flux_kontext", marker), None])
    assert checks == [3]
    assert answers[0].error.code == "CANCELLED" and answers[1].error is None
    assert list(zip(metrics.outcomes, metrics.origins)) == [("cancelled", "flux_kontext"), ("ok", "pipeline")]
