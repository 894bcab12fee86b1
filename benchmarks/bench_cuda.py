"""The cuda backend against torch on the GPU (torch CUDA tensors, float32), one group per case; runs only
where a GPU is present (skipped elsewhere, and under Numba's simulator). Each timed call ends with
torch.cuda.synchronize(), so the times include the kernels; benchmarks/cuda_events.py times the same
cases with CUDA events."""

import os

import pytest
import torch
import torch.nn.functional as F

import nbops

if os.environ.get("NUMBA_ENABLE_CUDASIM") or not torch.cuda.is_available():
    pytest.skip("no GPU (the CUDA benchmarks need one)", allow_module_level=True)

CASES = [  # (name, case, torch call, nbops call, input shape, weight shape)
    ("max_pool2d", "32x64x112x112 k3 s2 p1", lambda x, w: F.max_pool2d(x, 3, 2, 1), lambda x, w: nbops.max_pool2d(x, 3, 2, 1), (32, 64, 112, 112), None),
    ("max_pool2d", "32x64x112x112 k2 s2 p0", lambda x, w: F.max_pool2d(x, 2, 2), lambda x, w: nbops.max_pool2d(x, 2, 2), (32, 64, 112, 112), None),
    ("avg_pool2d", "32x64x112x112 k3 s2 p1", lambda x, w: F.avg_pool2d(x, 3, 2, 1), lambda x, w: nbops.avg_pool2d(x, 3, 2, 1), (32, 64, 112, 112), None),
    ("avg_pool2d", "32x64x112x112 k2 s2 p0", lambda x, w: F.avg_pool2d(x, 2, 2), lambda x, w: nbops.avg_pool2d(x, 2, 2), (32, 64, 112, 112), None),
    ("conv2d", "32x64x56x56 64->64 3x3 p1", lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: nbops.conv2d(x, w, padding=1), (32, 64, 56, 56), (64, 64, 3, 3)),
    ("conv2d", "32x128x28x28 128->128 3x3 p1", lambda x, w: F.conv2d(x, w, padding=1), lambda x, w: nbops.conv2d(x, w, padding=1), (32, 128, 28, 28), (128, 128, 3, 3)),
    ("sigmoid", "16000000", lambda x, w: torch.sigmoid(x), lambda x, w: nbops.sigmoid(x), (16_000_000,), None),
]


@pytest.mark.parametrize("index", range(len(CASES)), ids=[f"{c[0]} {c[1]}" for c in CASES])
def test_cuda(compare, index):
    op, case, torch_fn, nbops_fn, x_shape, w_shape = CASES[index]
    torch.backends.cudnn.allow_tf32 = False  # cuDNN in full float32, like nbops
    g = torch.Generator(device="cuda").manual_seed(0)
    x = torch.randn(x_shape, device="cuda", generator=g)
    w = torch.randn(w_shape, device="cuda", generator=g) * 0.05 if w_shape else None

    def synced(fn):
        def run():
            fn(x, w)
            torch.cuda.synchronize()

        return run

    def on_gpu(x, w):
        with nbops.use_backend("cuda"):
            return nbops_fn(x, w)

    compare(f"cuda-{op} {case}", case, synced(torch_fn), synced(on_gpu), x.numel() * 4)
