"""The cuda backend's speed against torch on a GPU, timed with CUDA events (the issue's figures):

    python benchmarks/cuda_events.py            # prints op, case, torch ms, nbops ms, torch/nbops

Also measures the per-call overhead of a tiny op on torch CUDA tensors (the wall time of
nbops.sigmoid on 1024 elements, kernel included). Needs a GPU; TF32 off for cuDNN.
"""

import statistics
import sys
import time

import torch

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from bench_cuda import CASES  # noqa: E402

import nbops  # noqa: E402


def gpu_ms(fn, repeats=20):
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    fn()  # warm-up: compiles or loads the kernel
    torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return statistics.median(times)


def main():
    torch.backends.cudnn.allow_tf32 = False
    print(f"device: {torch.cuda.get_device_name()}, torch {torch.__version__}, cudnn.allow_tf32=False")
    print("| op | case | torch ms | nbops ms | torch/nbops |")
    print("|---|---|---:|---:|---:|")
    for op, case, torch_fn, nbops_fn, x_shape, w_shape in CASES:
        x = torch.randn(x_shape, device="cuda")
        w = torch.randn(w_shape, device="cuda") * 0.05 if w_shape else None
        with nbops.use_backend("cuda"):
            ours = gpu_ms(lambda: nbops_fn(x, w))
        theirs = gpu_ms(lambda: torch_fn(x, w))
        print(f"| {op} | {case} | {theirs:.3f} | {ours:.3f} | {theirs / ours:.2f}x |", flush=True)
    tiny = torch.randn(1024, device="cuda")
    with nbops.use_backend("cuda"):
        nbops.sigmoid(tiny)
        torch.cuda.synchronize()
        calls = []
        for _ in range(200):
            begin = time.perf_counter()
            nbops.sigmoid(tiny)
            calls.append(time.perf_counter() - begin)
        torch.cuda.synchronize()
    print(f"per-call overhead, nbops.sigmoid on 1024 CUDA elements: {statistics.median(calls) * 1e6:.1f} us (median wall time)")


if __name__ == "__main__":
    main()
