"""CI smoke run of the perf tooling: the real perf_analyzer against the real server, CSV parsed, numbers sane."""

import json

import pytest

from kontext_engine.loading import default_cache_dir
from kontext_bench.input_data import make_input_data, synthetic_image
from kontext_bench.perf_analyzer import Sweep, overhead_fraction
from kontext_bench.report_sweep import write_report

pytestmark = pytest.mark.integration


# A smoke run proves the path, not a figure: any spread between windows is accepted (an idle
# Triton 2.51 dynamic batcher with a queue policy sometimes wakes 0.5 s late; perf/NOTES.md).
def test_concurrency_sweep_through_perf_analyzer(server, tmp_path):
    # The image travels as a base64 BYTES tensor with its 4-byte length prefix: a wrong prefix makes
    # the server answer INVALID_ARG and perf_analyzer fail, so a passing sweep proves the encoding.
    data = tmp_path / "input.json"
    data.write_text(json.dumps(make_input_data([synthetic_image(64, 64)], ["make it snowy"], 64, 64, steps=2)))
    sweep = Sweep(
        url=server.grpc_url, protocol="grpc", input_data=data, csv_path=tmp_path / "concurrency.csv",
        concurrency="1:2", request_count=8, stability_percentage=1000, metrics_url=f"127.0.0.1:{server.metrics_port}/metrics",
        timeout_s=240,
    )
    rows = sweep.run(default_cache_dir())

    assert [row["Concurrency"] for row in rows] == [1, 2]
    for row in rows:
        assert row["Inferences/Second"] > 0
        assert 0 < row["p50 latency"] <= row["p99 latency"]
        assert row["Server Compute Infer"] > 0
        assert 0 <= overhead_fraction(row) < 1
    report = write_report(tmp_path, {"concurrency": rows}, {"date": "-", "card": "ci", "request": {}, "commands": {}})
    assert "| 2 |" in report and (tmp_path / "concurrency.png").stat().st_size > 0


def test_http_sweep_runs(server, tmp_path):
    data = tmp_path / "input.json"
    data.write_text(json.dumps(make_input_data([None], ["a cat"], 64, 64, steps=1)))
    rows = Sweep(url=server.http_url, protocol="http", input_data=data, csv_path=tmp_path / "c.csv",
                 concurrency="1:1", request_count=5, stability_percentage=1000, timeout_s=240).run(default_cache_dir())
    assert len(rows) == 1 and rows[0]["Inferences/Second"] > 0
