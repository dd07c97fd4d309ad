"""Prometheus metrics on Triton's metrics endpoint, beside Triton's own nv_* metrics.

kontext_requests_total counts every request the model answered, once, by outcome. Requests Triton
rejects before the model sees them (queue full, queue timeout) are not in it: README "Metrics" says
which of Triton's counters hold them.

The pipeline model serves requests of both APIs (kontext_triton.forwarding): per-request series carry
the model the client called (`model="flux_kontext"` for a forwarded unary request); per-pipeline series
(step time, batch size) carry the pipeline model's name.
"""

import triton_python_backend_utils as pb_utils

OUTCOMES = ("ok", "invalid", "cancelled", "expired", "failed")
REQUEST_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64, 128]
STEP_BUCKETS = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.4, 0.6, 1, 2]


class KontextMetrics:
    def __init__(self, model: str):
        family = pb_utils.MetricFamily
        # A MetricFamily must outlive its Metrics: keep every family referenced here.
        self._families = {
            "requests": family("kontext_requests_total", "Requests answered by the model, by outcome", family.COUNTER),
            "request_seconds": family("kontext_request_duration_seconds",
                                      "Time from the model taking the request to its answer", family.HISTOGRAM),
            "step_seconds": family("kontext_step_duration_seconds",
                                   "Time between the ends of consecutive denoising steps of a batch", family.HISTOGRAM),
            "steps": family("kontext_steps_total", "Denoising steps per request, computed or skipped by the cache",
                            family.COUNTER),
            "batch_size": family("kontext_batch_size", "Requests in the pipeline call now running (0 when idle)",
                                 family.GAUGE),
        }
        self.model = model
        self._per_origin: dict[str, tuple] = {}
        self._of(model)
        labels = {"model": model}
        self._step_seconds = self._families["step_seconds"].Metric(labels=labels, buckets=STEP_BUCKETS)
        self._batch_size = self._families["batch_size"].Metric(labels=labels)

    def _of(self, origin: str) -> tuple:
        """The per-request series of requests sent to `origin` (this model, or a front forwarding to it)."""
        if origin not in self._per_origin:
            f, labels = self._families, {"model": origin}
            self._per_origin[origin] = (
                {o: f["requests"].Metric(labels={**labels, "outcome": o}) for o in OUTCOMES},
                f["request_seconds"].Metric(labels=labels, buckets=REQUEST_BUCKETS),
                {k: f["steps"].Metric(labels={**labels, "kind": k}) for k in ("computed", "skipped")},
            )
        return self._per_origin[origin]

    def request(self, outcome: str, seconds: float, origin: str) -> None:
        requests, request_seconds, _ = self._of(origin)
        requests[outcome].increment(1)
        request_seconds.observe(seconds)

    def step(self, seconds: float) -> None:
        self._step_seconds.observe(seconds)

    def steps(self, computed: int, skipped: int, origin: str) -> None:
        steps = self._of(origin)[2]
        steps["computed"].increment(computed)
        steps["skipped"].increment(skipped)

    def batch_size(self, size: int) -> None:
        self._batch_size.set(size)
