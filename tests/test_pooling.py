import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import nbops
from reference import DTYPES, assert_same, distinct, non_contiguous, randn

# (kernel_size, stride, padding, dilation, ceil_mode)
MAX_CASES = [
    (2, None, 0, 1, False),
    (3, 2, 1, 1, False),
    (3, 2, 1, 1, True),
    ((3, 2), (2, 1), (1, 0), 1, False),
    (3, 1, 1, 2, False),
    ((2, 3), (3, 2), (1, 1), (2, 1), True),
    (4, 3, 2, 1, True),
    (1, 1, 0, 1, False),
    (3, 3, 0, 3, True),
    ([2], [], [0], [1], False),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7), (1, 1, 5, 5), (1, 2, 5, 41)])
def test_max_pool2d_matches_torch(case, shape, dtype):
    k, s, p, d, ceil = case
    x = distinct(shape, dtype)
    try:
        expected, expected_idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops.max_pool2d(x, k, s, p, d, ceil)
        return
    out, idx = nbops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert_same(out, expected)
    assert_same(idx, expected_idx)
    assert_same(nbops.max_pool2d(x, k, s, p, d, ceil), expected)
    # keyword names are torch's
    kw = dict(kernel_size=k, stride=s, padding=p, dilation=d, ceil_mode=ceil)
    assert_same(nbops.max_pool2d(input=x, **kw), F.max_pool2d(input=x, **kw))


AVG_CASES = [
    # (kernel_size, stride, padding, ceil_mode, count_include_pad, divisor_override)
    (2, None, 0, False, True, None),
    (3, 2, 1, False, True, None),
    (3, 2, 1, False, False, None),
    (3, 2, 1, True, True, None),
    (3, 2, 1, True, False, None),
    ((3, 2), (2, 1), (1, 1), True, True, None),
    (4, 3, 2, True, True, None),
    (4, 3, 2, True, False, None),
    (3, 2, 1, True, True, 5),
    (2, 1, 1, False, False, -3),
    (5, 2, 2, True, True, None),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7), (1, 2, 6, 6), (1, 2, 5, 41)])
def test_avg_pool2d_matches_torch(case, shape, dtype):
    k, s, p, ceil, cip, div = case
    x = randn(shape, dtype)
    args = dict(kernel_size=k, stride=s, padding=p, ceil_mode=ceil, count_include_pad=cip, divisor_override=div)
    assert_same(nbops.avg_pool2d(x, **args), F.avg_pool2d(x, **args))
    assert_same(nbops.avg_pool2d(x, k, s, p, ceil, cip, div), F.avg_pool2d(x, k, s, p, ceil, cip, div))


@pytest.mark.parametrize("dtype", DTYPES)
def test_pooling_layouts_give_same_answers(dtype):
    x = distinct((2, 4, 10, 9), dtype)
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last), x.transpose(2, 3)):
        out, idx = nbops.max_pool2d(variant, 3, 2, 1, return_indices=True)
        exp, exp_idx = F.max_pool2d(variant, 3, 2, 1, return_indices=True)
        assert_same(out, exp)
        assert_same(idx, exp_idx)
        assert_same(nbops.avg_pool2d(variant, 3, 2, 1, True, False), F.avg_pool2d(variant, 3, 2, 1, True, False))


def test_pooling_numpy_in_numpy_out():
    x = distinct((2, 3, 8, 8), torch.float64)
    out, idx = nbops.max_pool2d(x.numpy(), 2, return_indices=True)
    assert isinstance(out, np.ndarray) and isinstance(idx, np.ndarray)
    assert out.dtype == np.float64 and idx.dtype == np.int64
    exp, exp_idx = F.max_pool2d(x, 2, return_indices=True)
    np.testing.assert_array_equal(out, exp.numpy())
    np.testing.assert_array_equal(idx, exp_idx.numpy())
    avg = nbops.avg_pool2d(x.numpy(), 3, 1, 1)
    assert isinstance(avg, np.ndarray)
    np.testing.assert_allclose(avg, F.avg_pool2d(x, 3, 1, 1).numpy(), rtol=1e-12)


def test_pooling_empty_batch():
    x = torch.zeros(0, 3, 8, 8)
    assert_same(nbops.max_pool2d(x, 2), F.max_pool2d(x, 2))
    assert_same(nbops.avg_pool2d(x, 2), F.avg_pool2d(x, 2))


@pytest.mark.parametrize("width", [6, 30])  # short output rows (windows walked one by one) and wide ones
def test_max_pool2d_nan_and_inf_like_torch(width):
    x = distinct((1, 2, 6, width), torch.float32)
    x[0, 0, 1, 1] = float("nan")
    x[0, 0, 4, 4] = float("nan")
    x[0, 0, 4, 5] = float("nan")
    x[0, 1, 0, 0] = float("inf")
    x[0, 1, 5, :] = -float("inf")
    x[0, 0, 2:4, width - 4 :] = -float("inf")  # windows of -inf only, at the right edge
    for k, s, p in [(2, 2, 0), (3, 1, 1), (3, 2, 1)]:
        out, idx = nbops.max_pool2d(x, k, s, p, return_indices=True)
        exp, exp_idx = F.max_pool2d(x, k, s, p, return_indices=True)
        assert_same(out, exp)
        assert_same(idx, exp_idx)
        assert_same(nbops.avg_pool2d(x, k, s, p), F.avg_pool2d(x, k, s, p))
    ninf = torch.full((1, 1, 4, 2 * width), -float("inf"))
    assert_same(nbops.max_pool2d(ninf, 2, return_indices=True)[1], F.max_pool2d(ninf, 2, return_indices=True)[1])


def test_pooling_does_not_modify_input():
    x = randn((2, 3, 7, 7))
    before = x.clone()
    nbops.max_pool2d(x, 3, 2, 1, return_indices=True)
    nbops.avg_pool2d(x, 3, 2, 1)
    assert torch.equal(x, before)


@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    sh=st.integers(1, 4),
    sw=st.integers(1, 4),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    ceil=st.booleans(),
    data=st.data(),
)
def test_max_pool2d_property(n, c, h, w, kh, kw, sh, sw, dh, dw, ceil, data):
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    x = distinct((n, c, h, w), torch.float32, seed=h * 13 + w)
    args = ((kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    try:
        exp, exp_idx = F.max_pool2d(x, *args, return_indices=True)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops.max_pool2d(x, *args)
        return
    out, idx = nbops.max_pool2d(x, *args, return_indices=True)
    assert_same(out, exp)
    assert_same(idx, exp_idx)


@given(
    n=st.integers(0, 2),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    kh=st.integers(1, 5),
    kw=st.integers(1, 5),
    sh=st.integers(1, 4),
    sw=st.integers(1, 4),
    ceil=st.booleans(),
    cip=st.booleans(),
    div=st.one_of(st.none(), st.integers(1, 7)),
    data=st.data(),
)
def test_avg_pool2d_property(n, c, h, w, kh, kw, sh, sw, ceil, cip, div, data):
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    x = randn((n, c, h, w), torch.float64, seed=h * 7 + w)
    args = ((kh, kw), (sh, sw), (ph, pw), ceil, cip, div)
    try:
        exp = F.avg_pool2d(x, *args)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops.avg_pool2d(x, *args)
        return
    assert_same(nbops.avg_pool2d(x, *args), exp)


BAD_POOL_ARGS = [
    # (input shape, kwargs, exception, words in the message)
    ((2, 3, 5, 5), dict(kernel_size=3, padding=2), ValueError, "padding"),
    ((2, 3, 5, 5), dict(kernel_size=7), ValueError, "too small"),
    ((2, 3, 5, 5), dict(kernel_size=2**40), ValueError, "kernel_size"),
    ((2, 3, 5, 5), dict(kernel_size=0), ValueError, "kernel_size"),
    ((2, 3, 5, 5), dict(kernel_size=2, stride=0), ValueError, "stride"),
    ((2, 3, 5, 5), dict(kernel_size=2, stride=-1), ValueError, "stride"),
    ((2, 3, 5, 5), dict(kernel_size=2, padding=-1), ValueError, "padding"),
    ((2, 3, 5, 5), dict(kernel_size=(2, 2, 2)), ValueError, "kernel_size"),
    ((2, 3, 5, 5), dict(kernel_size=2.0), TypeError, "kernel_size"),
    ((2, 3, 5, 5), dict(kernel_size="2"), TypeError, "kernel_size"),
    ((5, 5), dict(kernel_size=2), ValueError, "input"),
    ((1, 1, 1, 5, 5), dict(kernel_size=2), ValueError, "input"),
    ((2, 0, 5, 5), dict(kernel_size=2), ValueError, "input"),
    ((2, 3, 0, 5), dict(kernel_size=2), ValueError, "input"),
]


@pytest.mark.parametrize("op", ["max", "avg"])
@pytest.mark.parametrize("shape,kwargs,exc,words", BAD_POOL_ARGS)
def test_pooling_bad_arguments(op, shape, kwargs, exc, words):
    x = torch.zeros(shape)
    fn = nbops.max_pool2d if op == "max" else nbops.avg_pool2d
    with pytest.raises(exc, match=words):
        fn(x, **kwargs)


def test_pooling_bad_specific_arguments():
    x = torch.zeros(1, 1, 6, 6)
    with pytest.raises(ValueError, match="dilation"):
        nbops.max_pool2d(x, 2, dilation=0)
    with pytest.raises(ValueError, match="divisor_override"):
        nbops.avg_pool2d(x, 2, divisor_override=0)
    with pytest.raises(TypeError, match="divisor_override"):
        nbops.avg_pool2d(x, 2, divisor_override=1.5)
    for bad in (x.to(torch.int64), x.to(torch.float16), x.to(torch.bool)):
        with pytest.raises(TypeError, match="float32 or float64"):
            nbops.max_pool2d(bad, 2)
        with pytest.raises(TypeError, match="float32 or float64"):
            nbops.avg_pool2d(bad, 2)
    with pytest.raises(TypeError, match="input"):
        nbops.max_pool2d([[1.0, 2.0]], 2)


def test_pooling_kernel_variety_all_windows_checked():
    # every combination of small kernel/stride/pad on an odd input, both ceil modes, exhaustive
    x = distinct((1, 2, 7, 6), torch.float64)
    for k, s, ceil in itertools.product((1, 2, 3, 4), (1, 2, 3), (False, True)):
        for p in range(k // 2 + 1):
            exp = F.max_pool2d(x, k, s, p, 1, ceil, True)
            out = nbops.max_pool2d(x, k, s, p, 1, ceil, True)
            assert_same(out[0], exp[0])
            assert_same(out[1], exp[1])
            for cip in (True, False):
                assert_same(nbops.avg_pool2d(x, k, s, p, ceil, cip), F.avg_pool2d(x, k, s, p, ceil, cip))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 16, 7, 7), (2, 3, 1, 5), (3, 6, 6)])
def test_avg_pool2d_global_window_matches_torch(shape, dtype):
    """The window is the whole plane (a network's head): nbops sums each plane at once."""
    x = randn(shape, dtype)
    x[0, 0, 0] = float("nan")
    x[-1, -1, -1] = float("inf")
    size = shape[-2:]
    for kwargs in ({}, {"stride": 1}, {"ceil_mode": True, "stride": 3}, {"count_include_pad": False}, {"divisor_override": 5}):
        assert_same(nbops.avg_pool2d(x, size, **kwargs), F.avg_pool2d(x, size, **kwargs))
