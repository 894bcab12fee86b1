"""Shared pieces of the benchmark suite: every case runs once for torch and once for nbops in one group.

Run with `pytest benchmarks --benchmark-only`; `python -m nbops.bench` runs it and prints the report.
"""

import pytest

import nbops  # noqa: F401  (before torch, as README advises: nbops sets torch's OpenMP spin when it can)
import torch  # noqa: E402,I001

IMPLS = ["torch", "nbops"]


@pytest.fixture(params=IMPLS)
def impl(request):
    return request.param


@pytest.fixture
def compare(benchmark, impl):
    """compare(group, case, torch_fn, nbops_fn, bytes_moved, flops=0): time the `impl` side of a case.

    bytes_moved is the least memory traffic the op needs (inputs read once, outputs written once): the
    report divides it by the time to give GB/s. flops, when non-zero, gives GFLOP/s.
    """

    def run(group, case, torch_fn, nbops_fn, bytes_moved, flops=0):
        fn = torch_fn if impl == "torch" else nbops_fn
        fn()  # warm-up: compiles or loads the nbops kernel, lets torch allocate its buffers
        benchmark.group = group
        benchmark.extra_info.update(op=group.split(" ")[0], case=case, impl=impl, bytes=int(bytes_moved), flops=int(flops))
        benchmark(fn)

    return run


def randn(*shape, seed=0, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=dtype)  # (no dims: a 0-d tensor)


def nbytes(*tensors):
    return sum(t.numel() * t.element_size() for t in tensors)
