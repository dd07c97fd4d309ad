"""perf_analyzer CSV -> markdown table and PNG charts (throughput vs latency; where the time goes).

  python -m kontext_bench.report_sweep perf/results/<name>     (re-renders from the CSVs in that folder)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from kontext_bench.perf_analyzer import SERVER_PARTS, mean_gpu_utilization, overhead_fraction, read_csv

_LEVEL = {"concurrency": "Concurrency", "request_rate": "Request Rate"}


def table(kind: str, rows: list[dict]) -> list[str]:
    level = _LEVEL[kind]
    gpu = any(mean_gpu_utilization(row) is not None for row in rows)
    lines = [
        f"| {level} | infer/s | p50 ms | p95 ms | p99 ms | avg ms | queue ms | compute infer ms "
        "| compute in+out ms | network+client ms | not model compute |" + (" GPU util |" if gpu else ""),
        "|---|---|---|---|---|---|---|---|---|---|---|" + ("---|" if gpu else ""),
    ]
    for row in rows:
        ms = lambda key: row[key] / 1e3  # noqa: E731
        network = row["Client Send"] + row["Network+Server Send/Recv"] + row["Client Recv"]
        lines.append(
            f"| {row[level]:g} | {row['Inferences/Second']:.3f} | {ms('p50 latency'):.1f} | {ms('p95 latency'):.1f} "
            f"| {ms('p99 latency'):.1f} | {ms('Avg latency'):.1f} | {ms('Server Queue'):.1f} "
            f"| {ms('Server Compute Infer'):.1f} | {(row['Server Compute Input'] + row['Server Compute Output']) / 1e3:.2f} "
            f"| {network / 1e3:.2f} | {overhead_fraction(row):.2%} |"
            + (f" {mean_gpu_utilization(row):.1%} |" if gpu else "")
        )
    return lines


def charts(folder: Path, results: dict) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = []
    for kind, rows in results.items():
        level = _LEVEL[kind]
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
        throughput = [r["Inferences/Second"] for r in rows]
        for key, label in (("p50 latency", "p50"), ("p95 latency", "p95"), ("p99 latency", "p99")):
            left.plot(throughput, [r[key] / 1e3 for r in rows], marker="o", label=label)
        for r in rows:
            left.annotate(f"{r[level]:g}", (r["Inferences/Second"], r["p50 latency"] / 1e3), fontsize=8)
        left.set_xlabel("throughput (infer/s)")
        left.set_ylabel("latency (ms)")
        left.set_title(f"throughput vs latency ({level.lower()} labelled)")
        left.legend()
        levels = [f"{r[level]:g}" for r in rows]
        bottom = [0.0] * len(rows)
        for part in SERVER_PARTS:
            values = [r[part] / 1e3 for r in rows]
            right.bar(levels, values, bottom=bottom, label=part.replace("Server ", ""))
            bottom = [b + v for b, v in zip(bottom, values)]
        right.set_xlabel(level.lower())
        right.set_ylabel("ms per request")
        right.set_title("server time: queue vs compute")
        right.legend()
        fig.tight_layout()
        name = f"{kind}.png"
        fig.savefig(folder / name, dpi=100)
        plt.close(fig)
        names.append(name)
    return names


def write_report(folder: Path, results: dict, context: dict) -> str:
    (folder / "context.json").write_text(json.dumps(context, indent=1))
    lines = [f"# perf_analyzer: {folder.name}", "", f"- date: {context['date']}", f"- server card: {context['card']}",
             f"- request: {json.dumps(context['request'])}"]
    lines += [f"- {kind}: `{command}`" for kind, command in context["commands"].items()]
    timings = context.get("first_request_metadata", {}).get("timings_ms")
    if timings:
        lines.append("- first request, server-side (ms): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    for kind, rows in results.items():
        lines += ["", f"## {kind.replace('_', ' ')}", "", *table(kind, rows)]
    lines += [""] + [f"![{name}]({name})" for name in charts(folder, results)]
    text = "\n".join(lines) + "\n"
    (folder / "report.md").write_text(text)
    return text


def main() -> int:
    folder = Path(sys.argv[1])
    context = json.loads((folder / "context.json").read_text())
    results = {kind: read_csv(folder / f"{kind}.csv") for kind in _LEVEL if (folder / f"{kind}.csv").exists()}
    print(write_report(folder, results, context))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
