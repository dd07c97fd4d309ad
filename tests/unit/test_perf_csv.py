"""perf_analyzer's verbose CSV as a GPU server writes it (--collect-metrics adds per-GPU columns)."""

from kontext_bench.perf_analyzer import mean_gpu_utilization, overhead_fraction, read_csv

HEADER = ("Concurrency,Inferences/Second,Client Send,Network+Server Send/Recv,Server Queue,Server Compute Input,"
          "Server Compute Infer,Server Compute Output,Client Recv,p50 latency,p90 latency,p95 latency,p99 latency,"
          "Avg latency,request/response,response wait,Avg GPU Utilization,Avg GPU Power Usage,Max GPU Memory Usage,"
          "Total GPU Memory")
GPU = "GPU-72680ae0-eccb-0106-7ecd-8671a7aa48ae"


def test_rows_come_back_by_level_with_per_gpu_metrics(tmp_path):
    path = tmp_path / "concurrency.csv"
    path.write_text("\n".join([
        HEADER,
        f"2,0.115,539,4368,7122820,397,8799298,1939,5,17612650,17651984,17651984,17651984,15929369,544,15928199,"
        f"{GPU}:0.95;,{GPU}:666.4;,{GPU}:56306434048;,{GPU}:85520809984;",
        f"1,0.113,561,5785,97,598,8773153,2607,4,8791884,8845062,8845062,8845062,8782808,565,8781724,"
        f"{GPU}:0.97;,{GPU}:666.2;,{GPU}:56306434048;,{GPU}:85520809984;",
    ]) + "\n")
    first, second = read_csv(path)
    assert (first["Concurrency"], second["Concurrency"]) == (1.0, 2.0)
    assert first["Max GPU Memory Usage"] == {GPU: 56306434048.0}
    assert mean_gpu_utilization(first) == 0.97
    assert abs(overhead_fraction(first) - (1 - 8773153 / 8782808)) < 1e-12


def test_cpu_rows_have_no_gpu_utilization(tmp_path):
    path = tmp_path / "concurrency.csv"
    path.write_text("Concurrency,Inferences/Second,Avg latency,Server Compute Infer\n1,12.1,81900,73100\n")
    (row,) = read_csv(path)
    assert mean_gpu_utilization(row) is None and row["Avg latency"] == 81900.0
