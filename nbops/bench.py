"""`python -m nbops.bench`: run the benchmark suite (or read a saved run) and report nbops against torch.

    python -m nbops.bench                         # runs `pytest benchmarks --benchmark-only`, then reports
    python -m nbops.bench --json run.json         # reports a saved pytest-benchmark JSON file
    python -m nbops.bench --chart report.svg      # also writes the ratio chart there
    python -m nbops.bench --runs 3                # three runs; each case from its median run

For every case: torch time, nbops time (medians), ratio = torch / nbops (above 1: nbops is faster),
nbops' achieved GB/s against this machine's memory bandwidth (a large NumPy copy, measured here), and
GFLOP/s for the convolutions against the machine's nominal float32 peak.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from xml.sax.saxutils import escape

import numpy as np


def detection_rois(count: int, batch: int, image_height: float, image_width: float, generator):
    """Random proposal boxes as a torch Tensor[K, 5] (batch index, x1, y1, x2, y2), like a detector's
    RoI head sees: corners uniform over the image, x1 <= x2 and y1 <= y2. Used by the benchmarks and by
    `python -m nbops`."""
    import torch

    size = torch.tensor([image_width, image_height, image_width, image_height])
    corners = torch.rand(count, 4, generator=generator) * size
    return torch.cat(
        [
            torch.randint(0, batch, (count, 1), generator=generator).float(),
            torch.minimum(corners[:, :2], corners[:, 2:]),
            torch.maximum(corners[:, :2], corners[:, 2:]),
        ],
        dim=1,
    )


def measure_bandwidth(megabytes: int = 256, repeats: int = 5) -> float:
    """GB/s of a large NumPy copy (bytes read + bytes written), best of `repeats`."""
    src = np.ones(megabytes * 2**20 // 8)
    dst = np.empty_like(src)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        np.copyto(dst, src)
        best = min(best, time.perf_counter() - start)
    return 2 * src.nbytes / best / 1e9


def nominal_peak_gflops() -> float | None:
    """This machine's nominal float32 peak: cores x clock x flops per cycle per core (64 with AVX-512, 32
    with AVX2 and FMA: two fused multiply-add units, 8 lanes, 2 flops each; 8 otherwise). The clock is
    the one /proc/cpuinfo reports, which on a virtual machine is often the base clock: a CPU boosting
    above it can exceed this figure. None where /proc/cpuinfo is not there (not Linux)."""
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        return None
    mhz = [float(line.split(":")[1]) for line in text.splitlines() if line.startswith("cpu MHz")]
    flags = next((line.split(":")[1].split() for line in text.splitlines() if line.startswith("flags")), [])
    if not mhz:
        return None
    per_cycle = 64 if "avx512f" in flags else 32 if ("avx2" in flags and "fma" in flags) else 8
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return cores * max(mhz) / 1e3 * per_cycle


def run_suite(root: str, json_path: str, extra: list[str]) -> None:
    bench_dir = os.path.join(root, "benchmarks")
    if not os.path.isdir(bench_dir):
        raise SystemExit(f"no benchmarks/ folder under {root}: run from the nbops checkout or pass --json")
    command = [sys.executable, "-m", "pytest", bench_dir, "--benchmark-only", "-q", f"--benchmark-json={json_path}"]
    subprocess.run(command + extra, cwd=root, check=True)


def load_rows(json_path: str) -> list[dict]:
    with open(json_path) as f:
        data = json.load(f)
    cases: dict[tuple, dict] = defaultdict(dict)
    for bench in data["benchmarks"]:
        info = bench["extra_info"]
        key = (info["op"], info["case"])
        cases[key][info["impl"]] = bench["stats"]["median"]
        cases[key]["bytes"] = info.get("bytes", 0)
        cases[key]["flops"] = info.get("flops", 0)
        cases[key]["network"] = info.get("network", False)
        if "profile" in info:  # the share of the time in each op family (bench_networks.py)
            cases[key][f"{info['impl']}_profile"] = info["profile"]
    rows = []
    for (op, case), values in cases.items():
        if "torch" in values and "nbops" in values:
            rows.append(dict(op=op, case=case, **values))
    return rows


def combine_runs(runs: list[list[dict]]) -> list[dict]:
    """One row per case from several runs of the suite, both sides of a case from the same run: the run
    whose ratio torch / nbops is the median of the case's ratios (with an even count, the lower of the
    middle two). On a shared machine a slow phase hits a few cases of a run, on either side; the median
    run is neither the luckiest nor the unluckiest one."""
    by_case: dict[tuple, list[dict]] = defaultdict(list)
    for rows in runs:
        for row in rows:
            by_case[(row["op"], row["case"])].append(row)
    combined = []
    for candidates in by_case.values():
        ordered = sorted(candidates, key=lambda row: row["torch"] / row["nbops"])
        combined.append(ordered[(len(ordered) - 1) // 2])
    return combined


def _ms(seconds: float) -> str:
    return f"{seconds * 1e3:.3f}"


def _order(row: dict):
    """Whole networks first (they answer "does my network get faster?"), then the ops by name."""
    return (not row.get("network", False), row["op"], row["case"])


def profiles(rows: list[dict]) -> str:
    """Where each network's time goes: the share of each op family, torch's side and nbops' side, and
    the milliseconds they stand for (the gap per family is the difference of the last two)."""
    lines = []
    for row in sorted(rows, key=_order):
        if "torch_profile" not in row or "nbops_profile" not in row:
            continue
        if not lines:
            lines = ["", "Where the time goes (share of each side's time per op family, forward and backward; "
                     "'other': the torch ops between them)", "",
                     "| network | case | family | torch share | nbops share | torch ms | nbops ms |", "|---|---|---|---:|---:|---:|---:|"]
        families = sorted(set(row["torch_profile"]) | set(row["nbops_profile"]), key=lambda f: (f == "other", f))
        for family in families:
            mine, theirs = row["nbops_profile"].get(family, 0.0), row["torch_profile"].get(family, 0.0)
            lines.append(
                f"| {row['op']} | {row['case']} | {family} | {100 * theirs:.0f}% | {100 * mine:.0f}% | "
                f"{_ms(theirs * row['torch'])} | {_ms(mine * row['nbops'])} |"
            )
    return "\n".join(lines)


def table(rows: list[dict], bandwidth: float, peak: float | None = None) -> str:
    lines = [
        f"machine memory bandwidth (NumPy copy): {bandwidth:.1f} GB/s",
        f"machine float32 peak (nominal: cores x reported clock x flops per cycle; boost clocks go higher): {peak:.0f} GFLOP/s" if peak else "",
        "",
        "| op | case | torch ms | nbops ms | torch/nbops | nbops GB/s | % of bandwidth | nbops GFLOP/s | % of peak |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in sorted(rows, key=_order):
        gbs = row["bytes"] / row["nbops"] / 1e9 if row["bytes"] else 0.0
        gflops = row["flops"] / row["nbops"] / 1e9 if row["flops"] else 0.0
        share = f"{100 * gbs / bandwidth:.0f}%" if row["bytes"] else ""
        peak_share = f"{100 * gflops / peak:.0f}%" if (row["flops"] and peak) else ""
        lines.append(
            f"| {row['op']} | {row['case']} | {_ms(row['torch'])} | {_ms(row['nbops'])} | "
            f"{row['torch'] / row['nbops']:.2f}x | {gbs:.1f} | {share} | {f'{gflops:.1f}' if row['flops'] else ''} | {peak_share} |"
        )
    return "\n".join(lines)


def chart_svg(rows: list[dict]) -> str:
    """A horizontal bar per case: torch time / nbops time on a log scale, with the 1x line."""
    rows = sorted(rows, key=_order)
    bar_h, label_w, plot_w, top = 18, 460, 420, 40
    height = top + bar_h * len(rows) + 40
    lo, hi = np.log10(0.01), np.log10(100.0)

    def x_of(ratio: float) -> float:
        return label_w + plot_w * (np.clip(np.log10(ratio), lo, hi) - lo) / (hi - lo)

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 80}" height="{height}" '
        'font-family="sans-serif" font-size="11">',
        '<rect width="100%" height="100%" fill="white"/>',
        '<text x="10" y="20" font-size="14">nbops speed ratio (torch time / nbops time, log scale; right of 1x: nbops faster)</text>',
    ]
    for tick in (0.01, 0.1, 0.5, 1, 2, 10, 100):
        x = x_of(tick)
        parts.append(f'<line x1="{x:.1f}" y1="{top - 5}" x2="{x:.1f}" y2="{height - 30}" stroke="{"black" if tick == 1 else "#ddd"}"/>')
        parts.append(f'<text x="{x:.1f}" y="{height - 15}" text-anchor="middle">{tick}x</text>')
    for i, row in enumerate(rows):
        ratio = row["torch"] / row["nbops"]
        y = top + i * bar_h
        x0, x1 = x_of(1.0), x_of(ratio)
        color = "#2a9d5c" if ratio >= 1 else "#d1495b"
        parts.append(f'<text x="{label_w - 6}" y="{y + 12}" text-anchor="end">{escape(row["op"] + " " + row["case"])}</text>')
        parts.append(f'<rect x="{min(x0, x1):.1f}" y="{y + 2}" width="{abs(x1 - x0):.1f}" height="{bar_h - 4}" fill="{color}"/>')
        parts.append(f'<text x="{max(x0, x1) + 4:.1f}" y="{y + 12}">{ratio:.2f}x</text>')
    parts.append("</svg>")
    return "\n".join(parts)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops.bench", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--json", nargs="+", help="pytest-benchmark JSON files (runs) to report instead of running the suite"
    )
    parser.add_argument("--runs", type=int, default=1, help="run the suite this many times (see combine_runs)")
    parser.add_argument("--root", default=os.getcwd(), help="the nbops checkout holding benchmarks/ (default: .)")
    parser.add_argument("--chart", default="benchmark-report.svg", help="where to write the ratio chart (SVG)")
    parser.add_argument("pytest_args", nargs="*", help="extra pytest arguments, e.g. -k pool")
    args = parser.parse_args(argv)

    json_paths = args.json
    if json_paths is None:
        if args.runs < 1:
            parser.error("--runs must be at least 1")
        folder = tempfile.mkdtemp(prefix="nbops-bench-")
        json_paths = [os.path.join(folder, f"run{i + 1}.json") for i in range(args.runs)]
        for json_path in json_paths:
            run_suite(args.root, json_path, args.pytest_args)
    rows = combine_runs([load_rows(json_path) for json_path in json_paths])
    if not rows:
        print(f"no torch/nbops pairs in {', '.join(json_paths)}", file=sys.stderr)
        return 1
    bandwidth = measure_bandwidth()
    if len(json_paths) > 1:
        print(f"{len(json_paths)} runs; each case from the run with its median ratio (torch and nbops from the same run)")
    print(table(rows, bandwidth, nominal_peak_gflops()))
    print(profiles(rows))
    with open(args.chart, "w") as f:
        f.write(chart_svg(rows))
    print(f"\nchart: {args.chart}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
