"""Every distinct conv2d layer of torchvision's ResNet-18 and ResNet-50 (float32, 224x224 inputs):
forward, input gradient and weight gradient, nbops' CPU backend against torch in the same process,
in paired rounds (issue 14's per-layer targets).

    python benchmarks/conv_layers.py          # batch 8
    BATCH=16 python benchmarks/conv_layers.py

Prints a Markdown table: torch's and nbops' forward GFLOP/s (from each side's median time) and the
ratios torch time / nbops time (above 1: nbops is faster) for the three passes. The first layer's input
gradient is not needed in a network (its input does not require grad) and is left out.

Each of ROUNDS rounds (7; env ROUNDS) times the two back to back, in turns torch first and nbops first,
and a ratio is the median of the rounds' ratios. This 2-core VM's speed moves by up to 2x between
states that last seconds (a single-thread FMA loop measured 92 and 162 GFLOP/s minutes apart): a pair
run within milliseconds meets the same state, where the best of each side's rounds could pair a fast
round of one with a slow round of the other.
"""

import os
import statistics
import time

import nbops  # noqa: F401  (before torch: nbops sets torch's OpenMP spin when the user has not)
import torch

from nbops.cpu import conv

# (C_in, C_out, input size, kernel, stride); padding kernel // 2, as in the ResNets
LAYERS = [
    (3, 64, 224, 7, 2), (64, 64, 56, 3, 1), (64, 128, 56, 3, 2), (64, 128, 56, 1, 2), (128, 128, 28, 3, 1),
    (128, 256, 28, 3, 2), (128, 256, 28, 1, 2), (256, 256, 14, 3, 1), (256, 512, 14, 3, 2), (256, 512, 14, 1, 2),
    (512, 512, 7, 3, 1),  # ResNet-18's, then ResNet-50's others
    (64, 64, 56, 1, 1), (64, 256, 56, 1, 1), (256, 64, 56, 1, 1), (256, 128, 56, 1, 1), (128, 128, 56, 3, 2),
    (128, 512, 28, 1, 1), (256, 512, 56, 1, 2), (512, 128, 28, 1, 1), (512, 256, 28, 1, 1), (256, 256, 28, 3, 2),
    (256, 1024, 14, 1, 1), (512, 1024, 28, 1, 2), (1024, 256, 14, 1, 1), (1024, 512, 14, 1, 1),
    (512, 512, 14, 3, 2), (512, 2048, 7, 1, 1), (1024, 2048, 14, 1, 2), (2048, 512, 7, 1, 1),
]


ROUNDS = int(os.environ.get("ROUNDS", 7))


def paired(torch_fn, nbops_fn, rounds=ROUNDS):
    """(torch's median time, nbops' median time, median of the rounds' torch/nbops ratios)."""
    torch_fn(), nbops_fn()  # (compilation, first-touch)
    times = ([], [])
    for r in range(rounds):
        order = ((torch_fn, times[0]), (nbops_fn, times[1]))
        for fn, into in order if r % 2 == 0 else order[::-1]:
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    ratio = statistics.median(t / n for t, n in zip(*times))
    return statistics.median(times[0]), statistics.median(times[1]), ratio


def main():
    batch = int(os.environ.get("BATCH", 8))
    print(f"| layer (batch {batch}) | forward torch GFLOP/s | forward nbops GFLOP/s | forward | input grad | weight grad |")
    print("|---|---:|---:|---:|---:|---:|")
    for cin, cout, size, k, s in LAYERS:
        p = k // 2
        x = torch.randn(batch, cin, size, size)
        w = torch.randn(cout, cin, k, k) * 0.05
        y = torch.nn.functional.conv2d(x, w, None, s, p)
        gy = torch.randn_like(y)
        flops = 2 * y.numel() * cin * k * k
        xn, wn, gyn = x.numpy(), w.numpy(), gy.numpy()
        args = ((s, s), (p, p), (p, p), (1, 1), 1)

        def backward(mask):
            return (
                lambda: torch.ops.aten.convolution_backward(gy, x, w, None, [s, s], [p, p], [1, 1], False, [0, 0], 1, mask),
                lambda: conv.run_conv2d_backward(gyn, xn, wn, *args, tuple(mask)),
            )

        t_fwd, n_fwd, ratio = paired(
            lambda: torch.nn.functional.conv2d(x, w, None, s, p), lambda: conv.run_conv2d(xn, wn, None, *args, y.shape[2:])
        )
        ratios = [f"{ratio:.2f}x"]
        for mask in ([True, False, False], [False, True, False]):
            if mask[0] and cin == 3:
                ratios.append("-")
                continue
            ratios.append(f"{paired(*backward(mask))[2]:.2f}x")
        name = f"{cin}->{cout} {size}x{size} {k}x{k} s{s}"
        print(f"| {name} | {flops / t_fwd / 1e9:.0f} | {flops / n_fwd / 1e9:.0f} | " + " | ".join(ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
