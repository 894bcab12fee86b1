"""Parallel kernels and their serial twins (nbops/cpu/_parallel.py): the choice by size, and torch's
results from both versions of every operator's kernels, forward and backward."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from numba import prange
from reference import assert_same
from torchvision.ops import roi_pool

import nbops
from nbops.cpu import _parallel


def _double(x, out):
    for i in prange(x.size):
        out[i] = 2.0 * x[i]


def test_small_work_runs_the_serial_twin_and_large_work_the_parallel_kernel():
    kernel = _parallel.parallel_kernel()(_double)  # (no cache: a kernel of this test only)
    small = np.arange(10.0)
    out = np.empty_like(small)
    kernel(small, out)
    np.testing.assert_array_equal(out, 2 * small)
    assert kernel.serial.signatures and not kernel.parallel.signatures
    large = np.arange(float(_parallel.SERIAL_BELOW))  # with its output: twice the threshold
    out = np.empty_like(large)
    kernel(large, out)
    np.testing.assert_array_equal(out, 2 * large)
    assert kernel.parallel.signatures
    assert kernel.pick(_parallel.SERIAL_BELOW - 1) is kernel.serial
    assert kernel.pick(_parallel.SERIAL_BELOW) is kernel.parallel
    assert kernel.serial.py_func.__qualname__ != kernel.parallel.py_func.__qualname__  # separate disk caches


@pytest.fixture(params=["serial", "parallel"])
def version(request, monkeypatch):
    """Every kernel call in the test runs its serial twin, or its parallel kernel, whatever the size."""
    monkeypatch.setattr(_parallel, "SERIAL_BELOW", 1 << 62 if request.param == "serial" else 0)
    return request.param


def _leaf(t):
    return t.detach().clone().requires_grad_(True)


CASES = {
    "max_pool2d": (lambda f, x, w: f.max_pool2d(x, 3, 2, 1, return_indices=True)[0], F),
    "avg_pool2d": (lambda f, x, w: f.avg_pool2d(x, 3, 2, 1, count_include_pad=False), F),
    "conv2d": (lambda f, x, w: f.conv2d(x, w, padding=1, stride=(1, 2)), F),
    "conv_transpose2d": (lambda f, x, w: f.conv_transpose2d(x, w, stride=2, padding=1), F),
    "batch_norm": (lambda f, x, w: f.batch_norm(x, None, None, training=True), F),
    "mse_loss": (lambda f, x, w: f.mse_loss(x, torch.ones_like(x), reduction="none"), F),
}


@pytest.mark.parametrize("op", sorted(CASES))
def test_operator_and_gradient_match_torch_with_either_version(op, version):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, 9, 10, generator=g, dtype=torch.float64)
    w = torch.randn(4, 4, 3, 3, generator=g, dtype=torch.float64)
    call, torch_functions = CASES[op]
    xa, xb = _leaf(x), _leaf(x)
    expected = call(torch_functions, xa, w)
    actual = call(nbops, xb, w)
    assert_same(actual, expected)
    grad = torch.randn(expected.shape, generator=g, dtype=torch.float64)
    expected.backward(grad)
    actual.backward(grad)
    assert_same(xb.grad, xa.grad)


def test_the_other_operators_match_torch_with_either_version(version):
    g = torch.Generator().manual_seed(2)
    x = torch.randn(2, 5, 12, 12, generator=g)
    logits = torch.randn(40, 7, generator=g)
    target = torch.randint(0, 7, (40,), generator=g)
    probabilities = torch.softmax(torch.randn(40, 7, generator=g), dim=1)
    rois = torch.tensor([[0, 1.0, 1.0, 10.0, 11.0], [1, 0.0, 2.0, 7.0, 9.0]])
    assert_same(nbops.sigmoid(x), torch.sigmoid(x))
    assert_same(nbops.flatten(x, 1), torch.flatten(x, 1))
    assert_same(nbops.roi_pool(x, rois, 3, 0.5), roi_pool(x, rois, 3, 0.5))
    assert_same(nbops.batch_norm(x[0, :, 0], torch.zeros(12), torch.ones(12)), F.batch_norm(x[0, :, 0], torch.zeros(12), torch.ones(12)))
    for kwargs in ({}, {"label_smoothing": 0.1, "reduction": "none"}):
        assert_same(nbops.cross_entropy(logits, target, **kwargs), F.cross_entropy(logits, target, **kwargs))
    assert_same(nbops.cross_entropy(logits, probabilities), F.cross_entropy(logits, probabilities))
    assert_same(nbops.mse_loss(x, x.flip(0)), F.mse_loss(x, x.flip(0)))
    a, b = _leaf(logits), _leaf(logits)
    F.cross_entropy(a, target).backward()
    nbops.cross_entropy(b, target).backward()
    assert_same(b.grad, a.grad)
    a, b = _leaf(x), _leaf(x)
    torch.sigmoid(a).sum().backward()
    nbops.sigmoid(b).sum().backward()
    assert_same(b.grad, a.grad)
