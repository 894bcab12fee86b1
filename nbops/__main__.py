"""`python -m nbops`: the environment, then each of the ten ops on a realistic input against torch, then
torchvision's ResNet-18 converted with nbops.nn.convert against the same model on torch.

Prints op, shape, max abs difference from torch, torch time, nbops time and torch/nbops speed ratio
(best of several runs after one warm-up call, which also compiles the kernel on a cold cache). Each side
is timed on its own, after a pause that lets the other's idle worker threads go to sleep; the "after
torch" column times nbops right after a torch call, as it runs inside a model that mixes both.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np


def _environment() -> list[tuple[str, str]]:
    import numba

    import nbops
    from nbops import _config

    rows = [
        ("nbops", nbops.__version__),
        ("python", platform.python_version()),
        ("numpy", np.__version__),
        ("numba", numba.__version__),
    ]
    try:
        import torch

        rows.append(("torch", f"{torch.__version__} ({torch.get_num_threads()} threads)"))
    except ImportError:
        rows.append(("torch", "not installed"))
    try:
        import torchvision

        rows.append(("torchvision", torchvision.__version__))
    except ImportError:
        rows.append(("torchvision", "not installed"))
    rows += [
        ("backend", nbops.get_backend()),
        ("threading layer", f"{numba.config.THREADING_LAYER} ({_config.threading_note})"),
        ("numba threads", str(numba.get_num_threads())),
        ("torch OpenMP", _config.openmp_note),
        ("cpu cores", str(os.cpu_count())),
        ("cache dir", _config.cache_dir or "next to the package (numba's default)"),
    ]
    return rows


def _cases(torch, scale: float):
    """(op, shape text, nbops call, torch call) on inputs from real networks."""
    import torch.nn.functional as F
    from torchvision.ops import roi_pool as tv_roi_pool

    import nbops
    from nbops.bench import detection_rois

    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g)

    n = max(1, int(8 * scale))
    stem = randn(n, 64, 112, 112)
    act = randn(n, 64, 56, 56)
    weight = randn(64, 64, 3, 3) * 0.05
    up_in = randn(n, 128, 28, 28)
    up_w = randn(128, 64, 2, 2) * 0.05
    feat = randn(2, 256, 50, 68)
    rois = detection_rois(512, 2, 800.0, 1088.0, g)  # the feature map is 1/16 of an 800x1088 image
    bn_in = randn(n * 2, 256, 28, 28)
    rm, rv = torch.zeros(256), torch.ones(256)
    logits = randn(256, 1000)
    labels = torch.randint(0, 1000, (256,), generator=g)
    big = randn(int(4_000_000 * scale))
    big_target = randn(int(4_000_000 * scale))

    def shape(t):
        return "x".join(map(str, t.shape))

    return [
        ("max_pool2d", f"{shape(stem)} k3 s2 p1", lambda: nbops.max_pool2d(stem, 3, 2, 1), lambda: F.max_pool2d(stem, 3, 2, 1)),
        ("avg_pool2d", f"{shape(act)} k2 s2", lambda: nbops.avg_pool2d(act, 2), lambda: F.avg_pool2d(act, 2)),
        ("conv2d", f"{shape(act)} 64->64 3x3 p1", lambda: nbops.conv2d(act, weight, padding=1), lambda: F.conv2d(act, weight, padding=1)),
        (
            "conv_transpose2d",
            f"{shape(up_in)} 128->64 2x2 s2",
            lambda: nbops.conv_transpose2d(up_in, up_w, stride=2),
            lambda: F.conv_transpose2d(up_in, up_w, stride=2),
        ),
        ("flatten", f"{shape(act)} from dim 1", lambda: nbops.flatten(act, 1), lambda: torch.flatten(act, 1)),
        ("sigmoid", shape(big), lambda: nbops.sigmoid(big), lambda: torch.sigmoid(big)),
        (
            "roi_pool",
            f"{shape(feat)} 512 boxes 7x7 1/16",
            lambda: nbops.roi_pool(feat, rois, 7, 1 / 16),
            lambda: tv_roi_pool(feat, rois, 7, 1 / 16),
        ),
        (
            "batch_norm",
            f"{shape(bn_in)} train",
            lambda: nbops.batch_norm(bn_in, rm.clone(), rv.clone(), training=True),
            lambda: F.batch_norm(bn_in, rm.clone(), rv.clone(), training=True),
        ),
        ("cross_entropy", f"{shape(logits)}", lambda: nbops.cross_entropy(logits, labels), lambda: F.cross_entropy(logits, labels)),
        ("mse_loss", shape(big), lambda: nbops.mse_loss(big, big_target), lambda: F.mse_loss(big, big_target)),
    ]


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def _settle() -> None:
    """A pause that lets the other library's worker threads stop spinning and go to sleep."""
    time.sleep(0.05)


def _best_after(first, then, repeats: int) -> float:
    """Best time of `then` called right after `first` (not timed): nbops inside a mixed model."""
    best = float("inf")
    for _ in range(repeats):
        first()
        start = time.perf_counter()
        then()
        best = min(best, time.perf_counter() - start)
    return best


def _resnet18(torch, scale: float):
    """(case, nbops model, torch model, input): torchvision's ResNet-18, evaluation, random weights."""
    import copy

    import torchvision

    import nbops.nn

    torch.manual_seed(0)
    reference = torchvision.models.resnet18(weights=None).eval()
    converted = nbops.nn.convert(copy.deepcopy(reference))
    batch = max(1, int(8 * scale))
    x = torch.randn(batch, 3, 224, 224, generator=torch.Generator().manual_seed(1))
    return f"{batch}x3x224x224 eval", converted, reference, x


def _fmt_time(seconds: float) -> str:
    return f"{seconds * 1e3:9.3f} ms"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m nbops", description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5, help="timed runs per op (best is shown)")
    parser.add_argument("--scale", type=float, default=1.0, help="scale the batch sizes (e.g. 0.25 for a quick look)")
    args = parser.parse_args(argv)

    started = time.perf_counter()
    print("nbops environment")
    for key, value in _environment():
        print(f"  {key:<16} {value}")
    try:
        import torch
        import torchvision  # noqa: F401
    except ImportError:
        print("\ntorch/torchvision are not installed: install the test extra (pip install -e '.[test]') to compare.")
        return 1

    print("\nten ops against torch (float32; times are the best of", args.repeats, "runs after a warm-up; each side")
    print("timed on its own, and 'after torch': nbops right after a torch call, as in a model that mixes both)")
    header = f"{'op':<19} {'shape':<34} {'max |diff|':>11} {'torch':>12} {'nbops':>12} {'torch/nbops':>12} {'after torch':>12}"
    print(header)
    print("-" * len(header))
    worst = 0.0
    rows = [(name, shape, ours, theirs) for name, shape, ours, theirs in _cases(torch, args.scale)]
    case, converted, reference, image = _resnet18(torch, args.scale)
    rows.append(("resnet18 (convert)", case, lambda: converted(image), lambda: reference(image)))
    with torch.no_grad():
        for name, shape, ours, theirs in rows:
            got = ours()  # warm-up: compiles (or loads from cache) the kernel
            want = theirs()
            diff = float((got - want).abs().max()) if got.numel() else 0.0
            worst = max(worst, diff / max(1.0, float(want.abs().max()) if want.numel() else 1.0))
            _settle()
            t_torch = _best_time(theirs, args.repeats)
            _settle()
            t_nbops = _best_time(ours, args.repeats)
            t_mixed = _best_after(theirs, ours, args.repeats)
            print(
                f"{name:<19} {shape:<34} {diff:11.2e} {_fmt_time(t_torch):>12} {_fmt_time(t_nbops):>12} "
                f"{t_torch / t_nbops:11.2f}x {_fmt_time(t_mixed):>12}"
            )
    print(f"\ndone in {time.perf_counter() - started:.1f} s")
    if worst > 1e-3:
        print(f"self-check FAILED: relative difference {worst:.2e} from torch", file=sys.stderr)
        return 1
    print("self-check passed: every op matches torch")
    return 0


if __name__ == "__main__":
    sys.exit(main())
