"""Helpers shared by the tests: torch is the reference, computed in the test, never a stored value."""

import numpy as np
import torch

DTYPES = [torch.float32, torch.float64]

# Tolerances per dtype: long sums (conv) get more room in float32, elementwise ops less.
TOL = {
    torch.float32: dict(rtol=1e-5, atol=1e-5),
    torch.float64: dict(rtol=1e-10, atol=1e-10),
}
SUM_TOL = {
    torch.float32: dict(rtol=2e-4, atol=2e-4),
    torch.float64: dict(rtol=1e-9, atol=1e-9),
}


def distinct(shape, dtype=torch.float32, seed=0):
    """Tie-free values (a shuffled ramp in [-1, 1)): max and argmax are unambiguous."""
    g = torch.Generator().manual_seed(seed)
    n = int(np.prod(shape)) if len(shape) else 1
    ramp = (torch.randperm(n, generator=g).to(torch.float64) / max(n, 1)) * 2 - 1
    return ramp.reshape(shape).to(dtype)


def randn(shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)


def assert_same(actual, expected, tol=None, equal_nan=True):
    """nbops result vs torch result: same type, shape and dtype, values within tolerance."""
    assert isinstance(actual, torch.Tensor), type(actual)
    assert actual.shape == expected.shape, (actual.shape, expected.shape)
    assert actual.dtype == expected.dtype, (actual.dtype, expected.dtype)
    if not expected.is_floating_point():
        tol = dict(rtol=0, atol=0)  # indices are exact
    tol = tol or TOL[expected.dtype]
    torch.testing.assert_close(actual, expected, equal_nan=equal_nan, **tol)


def non_contiguous(t):
    """The same values in a strided (every other column) layout."""
    wide = torch.empty(t.shape[:-1] + (2 * t.shape[-1],), dtype=t.dtype)
    wide[..., ::2] = t
    view = wide[..., ::2]
    assert not view.is_contiguous() or t.shape[-1] <= 1
    return view
