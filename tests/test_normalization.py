import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nbops
from reference import DTYPES, assert_same, non_contiguous, randn

SHAPES = [(8, 3), (4, 3, 5), (4, 3, 5, 6), (2, 5, 3, 2, 2), (1, 4, 3), (2, 3, 16, 17), (3, 40, 300)]  # short and long (>= 256) rows
TOL64 = dict(rtol=1e-9, atol=1e-9)


def _tol(dtype):
    return dict(rtol=1e-4, atol=1e-5) if dtype == torch.float32 else TOL64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_matches_torch(shape, affine, training, dtype):
    c = shape[1]
    x = randn(shape, dtype) * 3 + 1
    weight = randn((c,), dtype, seed=1) if affine else None
    bias = randn((c,), dtype, seed=2) if affine else None
    rm_t, rv_t = randn((c,), dtype, seed=3), randn((c,), dtype, seed=4).abs() + 0.5
    rm_n, rv_n = rm_t.clone(), rv_t.clone()
    expected = F.batch_norm(x, rm_t, rv_t, weight, bias, training, 0.3, 1e-3)
    out = nbops.batch_norm(x, rm_n, rv_n, weight, bias, training, 0.3, 1e-3)
    assert_same(out, expected, _tol(dtype))
    assert_same(rm_n, rm_t, _tol(dtype))  # running statistics updated in place exactly like torch
    assert_same(rv_n, rv_t, _tol(dtype))
    kw = dict(weight=weight, bias=bias, training=training, momentum=0.1, eps=1e-5)
    assert_same(
        nbops.batch_norm(input=x, running_mean=rm_n, running_var=rv_n, **kw),
        F.batch_norm(x, rm_t, rv_t, **kw),
        _tol(dtype),
    )
    assert_same(rv_n, rv_t, _tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
def test_batch_norm_training_without_running_stats(dtype):
    x = randn((6, 4, 3, 3), dtype)
    assert_same(nbops.batch_norm(x, None, None, training=True), F.batch_norm(x, None, None, training=True), _tol(dtype))


def test_batch_norm_layouts_numpy_and_inputs_untouched():
    x = randn((4, 3, 6, 5)) * 2 - 1
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last)):
        rm_t, rv_t = torch.zeros(3), torch.ones(3)
        rm_n, rv_n = torch.zeros(3), torch.ones(3)
        expected = F.batch_norm(variant, rm_t, rv_t, training=True)
        assert_same(nbops.batch_norm(variant, rm_n, rv_n, training=True), expected, _tol(torch.float32))
        assert_same(rv_n, rv_t, _tol(torch.float32))
    before = x.clone()
    nbops.batch_norm(x, torch.zeros(3), torch.ones(3), training=True)
    assert torch.equal(x, before)
    # NumPy arrays: running statistics updated in place too, result is an ndarray
    rm, rv = np.zeros(3, np.float64), np.ones(3, np.float64)
    xd = x.double()
    out = nbops.batch_norm(xd.numpy(), rm, rv, training=True, momentum=0.5)
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    rm_t, rv_t = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    np.testing.assert_allclose(out, F.batch_norm(xd, rm_t, rv_t, training=True, momentum=0.5).numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(rm, rm_t.numpy(), rtol=1e-9)
    np.testing.assert_allclose(rv, rv_t.numpy(), rtol=1e-9)
    # running statistics that are strided views get updated through the view
    buffer = torch.zeros(6, dtype=torch.float64)
    rm_view = buffer[::2]
    nbops.batch_norm(xd, rm_view, torch.ones(3, dtype=torch.float64), training=True)
    assert torch.allclose(buffer[::2], 0.1 * xd.mean(dim=(0, 2, 3))) and buffer[1::2].eq(0).all()


def test_batch_norm_empty_and_special_values():
    rm, rv = torch.zeros(3), torch.ones(3)
    for training in (True, False):
        x = torch.zeros(0, 3, 4)
        assert_same(nbops.batch_norm(x, rm, rv, training=training), F.batch_norm(x, rm.clone(), rv.clone(), training=training))
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
    x = randn((5, 3, 4))
    x[0, 1, 2] = float("nan")
    x[1, 2, 0] = float("inf")
    rm_n, rv_n, rm_t, rv_t = torch.zeros(3), torch.ones(3), torch.zeros(3), torch.ones(3)
    assert_same(nbops.batch_norm(x, rm_n, rv_n, training=True), F.batch_norm(x, rm_t, rv_t, training=True), _tol(torch.float32))
    assert_same(rm_n, rm_t)
    assert_same(nbops.batch_norm(x, rm, rv), F.batch_norm(x, rm, rv))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(
    "shape,channels,given",
    [((0,), 0, True), ((0,), 3, True), ((0,), 0, False), ((0, 3), 5, True), ((0, 0), 0, True), ((2, 0), 0, True),
     ((2, 0, 4), 0, True), ((0, 3, 4, 5), 3, True), ((0, 3), 3, False)],
)
def test_batch_norm_inputs_without_elements_match_torch(shape, channels, given, training, dtype):
    """torch takes any input without elements (1-D included), whatever the statistics' and affine
    parameters' sizes, and returns an empty result without touching the running statistics."""
    x = torch.zeros(shape, dtype=dtype)
    stats = [torch.zeros(channels, dtype=dtype), torch.ones(channels, dtype=dtype)] if given else [None, None]
    # (torch's own batch_norm fails on weight and bias of 0 elements)
    affine = [torch.ones(channels, dtype=dtype), torch.zeros(channels, dtype=dtype)] if channels else [None, None]
    theirs = [None if s is None else s.clone() for s in stats]
    expected = F.batch_norm(x, *theirs, *affine, training=training)
    assert_same(nbops.batch_norm(x, *stats, *affine, training=training), expected)
    arrays = [None if s is None else s.numpy() for s in stats + affine]
    assert_same(torch.from_numpy(nbops.batch_norm(x.numpy(), *arrays, training=training)), expected)
    for mine, ref in zip(stats, theirs):
        assert mine is None or torch.equal(mine, ref)


def test_batch_norm_zero_variance_without_eps_gives_what_torch_gives():
    # evaluation: 1 / sqrt(0 + 0) is inf (then NaN where it meets a zero), never a ZeroDivisionError;
    # training: torch refuses eps = 0, and so does nbops
    for shape in ((4, 3), (2, 3, 16, 17)):
        x = torch.ones(shape)
        x[:, 1] = torch.arange(float(shape[0])).reshape(-1, *[1] * (len(shape) - 2))
        rm, rv = torch.zeros(3), torch.zeros(3)
        assert_same(nbops.batch_norm(x, rm, rv, eps=0.0), F.batch_norm(x, rm, rv, eps=0.0))
        with pytest.raises(ValueError, match="eps"):
            F.batch_norm(x, rm.clone(), rv.clone(), training=True, eps=0.0)
        with pytest.raises(ValueError, match="eps"):
            nbops.batch_norm(x, rm, rv, training=True, eps=0.0)
    # tiny eps and a constant channel in training: 0 * (1 / sqrt(eps)) = 0, as in torch
    x = torch.ones(4, 3)
    expected = F.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, eps=1e-30)
    assert_same(nbops.batch_norm(x, torch.zeros(3), torch.ones(3), training=True, eps=1e-30), expected)


def test_batch_norm_read_only_running_statistics():
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    for name in ("running_mean", "running_var"):
        stats = {"running_mean": np.zeros(3, np.float32), "running_var": np.ones(3, np.float32)}
        stats[name].flags.writeable = False
        with pytest.raises(ValueError, match=name):
            nbops.batch_norm(x, stats["running_mean"], stats["running_var"], training=True)
        # evaluation only reads them
        expected = F.batch_norm(torch.from_numpy(x), torch.zeros(3), torch.ones(3))
        np.testing.assert_allclose(nbops.batch_norm(x, stats["running_mean"], stats["running_var"]), expected.numpy(), rtol=1e-6, atol=1e-6)


def test_batch_norm_bad_arguments():
    x = torch.zeros(4, 3, 5)
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match="running_mean"):
        nbops.batch_norm(x, None, None, training=False)
    with pytest.raises(ValueError, match="both be None"):
        nbops.batch_norm(x, rm, None, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nbops.batch_norm(torch.zeros(1, 3), rm, rv, training=True)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        nbops.batch_norm(torch.zeros(1, 3, 1, 1), rm, rv, training=True)
    with pytest.raises(ValueError, match="at least 2 dims"):
        nbops.batch_norm(torch.zeros(3), rm, rv)
    with pytest.raises(ValueError, match="running_mean"):
        nbops.batch_norm(x, torch.zeros(4), rv)
    with pytest.raises(ValueError, match="running_var"):
        nbops.batch_norm(x, rm, torch.ones(3, 1))
    with pytest.raises(ValueError, match="weight"):
        nbops.batch_norm(x, rm, rv, weight=torch.ones(4))
    with pytest.raises(ValueError, match="bias"):
        nbops.batch_norm(x, rm, rv, bias=torch.ones(2))
    with pytest.raises(TypeError, match="running_mean"):
        nbops.batch_norm(x, rm.double(), rv.double())
    with pytest.raises(TypeError, match="weight"):
        nbops.batch_norm(x, rm, rv, weight=torch.ones(3, dtype=torch.float64))
    with pytest.raises(TypeError, match="momentum"):
        nbops.batch_norm(x, rm, rv, training=True, momentum=None)
    with pytest.raises(ValueError, match="eps"):
        nbops.batch_norm(x, rm, rv, eps=-1.0)
    with pytest.raises(TypeError, match="float32 or float64"):
        nbops.batch_norm(x.long(), rm, rv)
    # nothing was touched by the failed calls
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))
