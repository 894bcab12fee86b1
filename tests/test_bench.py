"""The benchmark report's arithmetic (nbops/bench.py), on made-up runs: no benchmark is run here."""

import json

from nbops import bench


def _run(path, medians):
    """A pytest-benchmark JSON file with one case per (case, impl) -> median seconds."""
    benchmarks = [
        {"extra_info": {"op": "sigmoid", "case": case, "impl": impl, "bytes": 8_000_000, "flops": 0}, "stats": {"median": median}}
        for (case, impl), median in medians.items()
    ]
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    return str(path)


def test_each_case_comes_whole_from_its_least_disturbed_run(tmp_path):
    first = _run(tmp_path / "a.json", {("1M", "torch"): 1.0, ("1M", "nbops"): 0.5, ("4M", "torch"): 4.0, ("4M", "nbops"): 9.0})
    second = _run(tmp_path / "b.json", {("1M", "torch"): 3.0, ("1M", "nbops"): 0.4, ("4M", "torch"): 4.4, ("4M", "nbops"): 2.0})
    rows = {row["case"]: row for row in bench.combine_runs([bench.load_rows(first), bench.load_rows(second)])}
    # 1M: run a is at most 1.25x off its best (nbops 0.5 vs 0.4), run b 3x (torch): a, both sides
    assert (rows["1M"]["torch"], rows["1M"]["nbops"]) == (1.0, 0.5)
    # 4M: run a's nbops is 4.5x off, run b's torch only 1.1x: b, both sides
    assert (rows["4M"]["torch"], rows["4M"]["nbops"]) == (4.4, 2.0)


def test_one_run_is_reported_as_it_is(tmp_path):
    only = _run(tmp_path / "a.json", {("1M", "torch"): 1.0, ("1M", "nbops"): 2.0})
    rows = bench.combine_runs([bench.load_rows(only)])
    assert [(row["torch"], row["nbops"]) for row in rows] == [(1.0, 2.0)]
    text = bench.table(rows, bandwidth=10.0)
    assert "| sigmoid | 1M | 1000.000 | 2000.000 | 0.50x | 0.0 | 0% |" in text
