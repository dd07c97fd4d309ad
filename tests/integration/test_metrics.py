"""Our Prometheus metrics, scraped from the real server beside Triton's own."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from tests.integration.conftest import SMALL_QUEUE_SIZE
from tests.integration.helpers import infer, metric, png, scrape, wait_for

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
    assert outcomes == {"ok", "invalid", "cancelled", "expired", "failed"}



COUNTERS = {
    "kontext ok": ("kontext_requests_total", {"outcome": "ok"}),
    "kontext invalid": ("kontext_requests_total", {"outcome": "invalid"}),
    "kontext cancelled": ("kontext_requests_total", {"outcome": "cancelled"}),
    "kontext expired": ("kontext_requests_total", {"outcome": "expired"}),
    "kontext failed": ("kontext_requests_total", {"outcome": "failed"}),
    "kontext request durations": ("kontext_request_duration_seconds_count", {}),
    "nv success": ("nv_inference_request_success", {}),
    "nv rejected": ("nv_inference_request_failure", {"reason": "REJECTED"}),
    "nv canceled": ("nv_inference_request_failure", {"reason": "CANCELED"}),
    "nv backend": ("nv_inference_request_failure", {"reason": "BACKEND"}),
    "nv other": ("nv_inference_request_failure", {"reason": "OTHER"}),
    "nv inference count": ("nv_inference_count", {}),
}


def counters(server) -> dict:
    return {key: metric(server, name, model=UNARY, **labels) for key, (name, labels) in COUNTERS.items()}


def grpc_infer(server, steps, size=64, **options):
    return infer(server, prompt=b"x", image=png(size, size), width=size, height=size, steps=steps,
                 infer_options=options)


def outcome(call) -> str:
    try:
        call()
        return "ok"
    except InferenceServerException as exc:
        return exc.message()


def while_busy(server, *calls) -> list[str]:
    """Runs `calls` while a slow request holds the single instance; the slow one's outcome first."""
    with ThreadPoolExecutor(1 + len(calls)) as pool:
        slow = pool.submit(outcome, lambda: grpc_infer(server, 60, 512))
        assert wait_for(lambda: metric(server, "kontext_batch_size", model=UNARY) > 0, 30)
        futures = [pool.submit(outcome, call) for call in calls]
        return [slow.result(), *(f.result() for f in futures)]


def test_a_known_mix_adds_up_in_every_documented_counter(small_queue_server):
    server = small_queue_server
    before = counters(server)
    sent = [outcome(lambda: grpc_infer(server, 2)) for _ in range(2)]  # ok
    sent.append(outcome(lambda: infer(server, prompt=b"", steps=2)))  # invalid
    client = grpcclient.InferenceServerClient(server.grpc_url)  # cancelled: the client gives up after 1 s
    sent.append(outcome(lambda: infer(server, client=client, prompt=b"x", image=png(512, 512), width=512, height=512,
                                      steps=100, infer_options={"client_timeout": 1.0})))
    assert wait_for(lambda: metric(server, "kontext_requests_total", model=UNARY, outcome="cancelled")
                    == before["kontext cancelled"] + 1)
    sent.append(outcome(lambda: grpc_infer(server, 100, 512, timeout=1_000_000)))  # expired after 1 s of compute
    # queue full: one running, SMALL_QUEUE_SIZE queued (ok), two more rejected at once
    sent += while_busy(server, *[lambda: grpc_infer(server, 2)] * (SMALL_QUEUE_SIZE + 2))
    sent += while_busy(server, lambda: grpc_infer(server, 2, timeout=200_000))  # queue timeout after 0.2 s
    after = counters(server)
    delta = {key: after[key] - before[key] for key in COUNTERS}
    print(f"\nknown mix: {len(sent)} requests -> counter deltas {delta}")
    assert [s if s == "ok" else s.split(":")[0][:40] for s in sent].count("ok") == 2 + 1 + SMALL_QUEUE_SIZE + 1
    assert delta == {
        "kontext ok": 6, "kontext invalid": 1, "kontext cancelled": 1, "kontext expired": 1, "kontext failed": 0,
        "kontext request durations": 9,  # every request the model answered, once
        "nv success": 9,  # Triton 2.51 counts every request the model answered, errors included
        "nv rejected": 1,  # the queue timeout; queue-full rejections are counted nowhere by Triton 2.51
        "nv canceled": 0, "nv backend": 0, "nv other": 0,
        "nv inference count": 9,
    }
