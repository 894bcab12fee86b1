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


def test_each_case_comes_whole_from_its_median_run(tmp_path):
    medians = [
        {("1M", "torch"): 1.0, ("1M", "nbops"): 0.5, ("4M", "torch"): 4.0, ("4M", "nbops"): 9.0},  # 2x, 0.44x
        {("1M", "torch"): 3.0, ("1M", "nbops"): 0.5, ("4M", "torch"): 4.4, ("4M", "nbops"): 2.0},  # 6x, 2.2x
        {("1M", "torch"): 1.2, ("1M", "nbops"): 0.4, ("4M", "torch"): 4.2, ("4M", "nbops"): 3.0},  # 3x, 1.4x
    ]
    runs = [bench.load_rows(_run(tmp_path / f"{i}.json", m)) for i, m in enumerate(medians)]
    rows = {row["case"]: row for row in bench.combine_runs(runs)}
    assert (rows["1M"]["torch"], rows["1M"]["nbops"]) == (1.2, 0.4)  # 3x, between 2x and 6x: both sides of run 3
    assert (rows["4M"]["torch"], rows["4M"]["nbops"]) == (4.2, 3.0)
    two = {row["case"]: row for row in bench.combine_runs(runs[:2])}
    assert (two["1M"]["torch"], two["1M"]["nbops"]) == (1.0, 0.5)  # the lower of two


def test_one_run_is_reported_as_it_is(tmp_path):
    only = _run(tmp_path / "a.json", {("1M", "torch"): 1.0, ("1M", "nbops"): 2.0})
    rows = bench.combine_runs([bench.load_rows(only)])
    assert [(row["torch"], row["nbops"]) for row in rows] == [(1.0, 2.0)]
    text = bench.table(rows, bandwidth=10.0)
    assert "| sigmoid | 1M | 1000.000 | 2000.000 | 0.50x | 0.0 | 0% |" in text


def test_networks_come_first_with_their_profiles(tmp_path):
    benchmarks = [
        {"extra_info": {"op": "conv2d", "case": "a", "impl": impl, "bytes": 0, "flops": 0}, "stats": {"median": 1.0}}
        for impl in ("torch", "nbops")
    ] + [
        {"extra_info": {"op": "resnet18", "case": "eval", "impl": impl, "bytes": 0, "flops": 0, "network": True,
                        "profile": {"conv": share, "other": 1 - share}}, "stats": {"median": median}}
        for impl, median, share in (("torch", 0.2, 0.75), ("nbops", 0.5, 0.9))
    ]
    path = tmp_path / "run.json"
    path.write_text(json.dumps({"benchmarks": benchmarks}))
    rows = bench.combine_runs([bench.load_rows(str(path))])
    lines = bench.table(rows, bandwidth=10.0).splitlines()
    assert lines[5].startswith("| resnet18 | eval | 200.000 | 500.000 | 0.40x") and lines[6].startswith("| conv2d |")
    profile = bench.profiles(rows)
    assert "| resnet18 | eval | conv | 75% | 90% | 150.000 | 450.000 |" in profile
    assert "| resnet18 | eval | other | 25% | 10% | 50.000 | 50.000 |" in profile
    assert bench.profiles([row for row in rows if row["op"] == "conv2d"]) == ""
