"""Turns bench_inprocess.py / cold_start.py JSON files into one markdown table and one PNG chart.

Speed-ups and fidelity are computed only against the baseline of the *same* run (same process, same
card), never across runs.

  python -m kontext_bench.report_bench perf/results/raw/h100_*.json --name h100_optimizations
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

RESULTS = Path("perf/results")  # run from the repository root


def load(paths: list[Path]) -> tuple[list[dict], list[dict]]:
    benches, colds = [], []
    for path in paths:
        report = json.loads(path.read_text())
        report["file"] = path.name
        (colds if "starts" in report else benches).append(report)
    return benches, colds


def bench_table(benches: list[dict]) -> list[str]:
    lines = [
        "| run | variant | GPUs | shape | steps | e2e s (median, min-max) | vs baseline | full step ms | cached step ms "
        "| steps computed | TFLOP/s | x floor | peak GiB | PSNR dB | rel L2 | first-call warm-up s |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for report in benches:
        # The baseline of a row: variant "baseline" of the run, or the same variant on one GPU (context parallel).
        baseline = {(r["shape"], r["steps"]): r["e2e_median_s"] for r in report["rows"] if r["variant"] == "baseline"}
        one_gpu = {(r["variant"], r["shape"], r["steps"]): r["e2e_median_s"] for r in report["rows"]
                   if r.get("gpus", 1) == 1}
        for r in report["rows"]:
            gpus = r.get("gpus", 1)
            base = one_gpu.get((r["variant"], r["shape"], r["steps"])) if gpus > 1 else baseline.get((r["shape"], r["steps"]))
            speedup = (f"{base / r['e2e_median_s']:.2f}x" + (" vs 1 GPU" if gpus > 1 else "")) if base else "-"
            if gpus > 1 and "psnr_db_vs_1gpu" in r:
                r = {**r, "psnr_db": r["psnr_db_vs_1gpu"], "rel_l2": f"{r['rel_l2_vs_1gpu']} vs 1 GPU"}
            floor = f"{r['ratio_to_floor']:.2f} ({r['floor_kind']})" if r.get("ratio_to_floor") else "-"
            computed = f"{r['steps_computed'][0]}/{r['steps']}"
            psnr = "-" if "psnr_db" not in r else ("identical" if r["psnr_db"] == float("inf") else f"{r['psnr_db']:.1f}")
            lines.append(
                f"| {report['file'].split('.')[0]} | {r['variant']} | {gpus} | {r['shape']} | {r['steps']} "
                f"| {r['e2e_median_s']:.3f} ({min(r['e2e_s']):.3f}-{max(r['e2e_s']):.3f}) | {speedup} "
                f"| {r['full_step_ms'] or '-'} | {r['cached_step_ms'] or '-'} | {computed} "
                f"| {r.get('achieved_tflops', '-')} | {floor} | {r.get('peak_mem_gib', '-')} | {psnr} "
                f"| {r.get('rel_l2', '-')} | {r['warmup_s']} |"
            )
    return lines


def cold_table(colds: list[dict]) -> list[str]:
    lines = ["| run | variant | start | process start to ready s | load+optimize+warm-up s |", "|---|---|---|---|---|"]
    for report in colds:
        for start in report["starts"]:
            lines.append(
                f"| {report['file'].split('.')[0]} | {report['variant']} | {start['label']} | {start['wall_s']} "
                f"| {start['ready_in_process_s']} |"
            )
    return lines


def chart(benches: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [(f"{r['variant']} [run {b['file'].split('_')[1]}]", r) for b in benches for r in b["rows"]
            if r["shape"] == "edit1024" and r["steps"] == 28]
    fig, (left, right) = plt.subplots(1, 2, figsize=(14, 0.45 * len(rows) + 1.5))
    labels = [label for label, _ in rows]
    left.barh(labels, [r["e2e_median_s"] for _, r in rows], color="tab:blue")
    left.set_xlabel("end-to-end seconds, 1024x1024 edit, 28 steps (lower is better)")
    right.barh(labels, [r["full_step_ms"] or r["cached_step_ms"] for _, r in rows],
               color=["tab:orange" if r["full_step_ms"] else "tab:green" for _, r in rows])
    floors = {r["floor_ms"] for _, r in rows if r.get("floor_kind") == "bf16"}
    for floor in floors:
        right.axvline(floor, color="black", linestyle="--", linewidth=1)
    right.set_xlabel("transformer ms per step (orange: full step, green: cached step; dashed: bf16 floor)")
    right.set_yticks([])
    for axis in (left, right):
        axis.invert_yaxis()
    card = benches[0]["card"]
    fig.suptitle(f"FLUX.1-Kontext full-size architecture, random weights, {card}, torch {benches[0]['versions']['torch']}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("files", nargs="+", type=Path)
    parser.add_argument("--name", required=True, help="output stem under perf/results/")
    args = parser.parse_args()
    benches, colds = load(args.files)
    header = [f"# {args.name}", ""]
    for report in benches + colds:
        versions = ", ".join(f"{k} {v}" for k, v in report["versions"].items())
        rates = [f"{k.split('_')[0]} matmul {v:.0f} TFLOP/s" for k, v in (report.get("matmul") or {}).items()]
        header.append(f"- `{report['file']}`: " + "; ".join(
            [f"{report['card']}, {report['date']}, {versions}", *rates, f"`{report['command']}`"]))
        if report.get("failures"):
            header.append(f"  - failed: {report['failures']}")
    lines = header + ["", *bench_table(benches)]
    if colds:
        lines += ["", *cold_table(colds)]
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    (RESULTS / f"{args.name}.json").write_text(json.dumps({"benches": benches, "cold_starts": colds}, indent=1))
    if benches:
        chart(benches, RESULTS / f"{args.name}.png")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
