"""Every distinct conv2d layer of torchvision's ResNet-18 and ResNet-50 (float32, 224x224 inputs):
forward, input gradient and weight gradient, nbops' CPU backend against torch in the same process,
the two alternating, best of 5 rounds each (issue 14's per-layer targets).

    python benchmarks/conv_layers.py          # batch 8
    BATCH=16 python benchmarks/conv_layers.py

Prints a Markdown table: torch's and nbops' forward GFLOP/s and the ratios torch time / nbops time
(above 1: nbops is faster) for the three passes. The first layer's input gradient is not needed in a
network (its input does not require grad) and is left out.
"""

import os
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


def best_pair(torch_fn, nbops_fn, rounds=5):
    torch_fn(), nbops_fn()  # (compilation, first-touch)
    times = ([], [])
    for _ in range(rounds):
        for fn, into in ((torch_fn, times[0]), (nbops_fn, times[1])):
            start = time.perf_counter()
            fn()
            into.append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


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

        t_fwd, n_fwd = best_pair(
            lambda: torch.nn.functional.conv2d(x, w, None, s, p), lambda: conv.run_conv2d(xn, wn, None, *args, y.shape[2:])
        )
        ratios = [f"{t_fwd / n_fwd:.2f}x"]
        for mask in ([True, False, False], [False, True, False]):
            if mask[0] and cin == 3:
                ratios.append("-")
                continue
            t, n = best_pair(*backward(mask))
            ratios.append(f"{t / n:.2f}x")
        name = f"{cin}->{cout} {size}x{size} {k}x{k} s{s}"
        print(f"| {name} | {flops / t_fwd / 1e9:.0f} | {flops / n_fwd / 1e9:.0f} | " + " | ".join(ratios) + " |", flush=True)


if __name__ == "__main__":
    main()
