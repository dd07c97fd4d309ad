"""Our Prometheus metrics, scraped from the real server beside Triton's own."""

import pytest
from tritonclient.utils import InferenceServerException

from tests.integration.helpers import infer, metric, png, scrape

pytestmark = pytest.mark.integration
UNARY = "flux_kontext"


def test_outcomes_steps_and_latency_are_counted(server):
    def read():
        return {
            "ok": metric(server, "kontext_requests_total", model=UNARY, outcome="ok"),
            "invalid": metric(server, "kontext_requests_total", model=UNARY, outcome="invalid"),
            "computed": metric(server, "kontext_steps_total", model=UNARY, kind="computed"),
            "skipped": metric(server, "kontext_steps_total", model=UNARY, kind="skipped"),
            "requests_observed": metric(server, "kontext_request_duration_seconds_count", model=UNARY),
            "steps_observed": metric(server, "kontext_step_duration_seconds_count", model=UNARY),
        }

    before = read()
    infer(server, prompt=b"x", image=png(), steps=3)
    with pytest.raises(InferenceServerException):
        infer(server, prompt=b"", steps=3)
    after = read()
    assert {k: after[k] - before[k] for k in before} == {
        "ok": 1, "invalid": 1, "computed": 3, "skipped": 0, "requests_observed": 2,
        "steps_observed": 2,  # steps 2 and 3: step 1's time includes the prompt and image encoding
    }
    assert metric(server, "kontext_batch_size", model=UNARY) == 0  # idle


def test_names_follow_prometheus_conventions_beside_tritons_own(server):
    names = {name for name, _ in scrape(server)}
    ours = {n for n in names if n.startswith("kontext_")}
    assert {"kontext_requests_total", "kontext_steps_total", "kontext_batch_size"} <= ours
    assert {"kontext_request_duration_seconds_bucket", "kontext_step_duration_seconds_sum"} <= ours
    assert "nv_inference_request_success" in names
    outcomes = {dict(labels).get("outcome") for name, labels in scrape(server) if name == "kontext_requests_total"}
    assert outcomes == {"ok", "invalid", "cancelled", "failed"}
