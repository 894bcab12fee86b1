import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import nbops
from reference import DTYPES, assert_same, non_contiguous, randn

REDUCTIONS = ["mean", "sum", "none"]


def _tol(dtype):
    return dict(rtol=2e-5, atol=2e-5) if dtype == torch.float32 else dict(rtol=1e-10, atol=1e-10)


def _targets(shape, classes, seed=0, ignore=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(0, classes, shape, generator=g)
    if ignore is not None and t.numel():
        t.view(-1)[:: 3] = ignore
    return t


# (input shape, target shape)  target shape = input shape without the class dim
CE_SHAPES = [((5,), ()), ((6, 5), (6,)), ((3, 4, 5), (3, 5)), ((2, 4, 3, 2), (2, 3, 2)), ((0, 4), (0,))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", CE_SHAPES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("ignore", [None, 1, -100])
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
def test_cross_entropy_class_targets(shapes, reduction, weighted, ignore, smoothing, dtype):
    in_shape, t_shape = shapes
    classes = in_shape[0] if len(in_shape) == 1 else in_shape[1]
    x = randn(in_shape, dtype) * 4
    t = _targets(t_shape, classes, ignore=ignore)
    w = (torch.rand(classes, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5).to(dtype) if weighted else None
    kw = dict(weight=w, ignore_index=-100 if ignore is None else ignore, reduction=reduction, label_smoothing=smoothing)
    assert_same(nbops.cross_entropy(x, t, **kw), F.cross_entropy(x, t, **kw), _tol(dtype))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_shape", [(5,), (6, 5), (3, 4, 5), (2, 4, 3, 2), (0, 4)])
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
def test_cross_entropy_probability_targets(in_shape, reduction, weighted, smoothing, dtype):
    class_dim = 0 if len(in_shape) == 1 else 1
    classes = in_shape[class_dim]
    x = randn(in_shape, dtype) * 4
    p = torch.softmax(randn(in_shape, dtype, seed=1), dim=class_dim)
    w = (torch.rand(classes, generator=torch.Generator().manual_seed(3), dtype=torch.float64) + 0.5).to(dtype) if weighted else None
    kw = dict(weight=w, reduction=reduction, label_smoothing=smoothing)
    assert_same(nbops.cross_entropy(x, p, **kw), F.cross_entropy(x, p, **kw), _tol(dtype))


def test_cross_entropy_stable_for_huge_and_infinite_logits():
    x = torch.tensor([[1e30, 1.0, -1e30], [-1e30, 1e30, 0.0], [88.0, 89.0, 90.0], [1e4, -1e4, 0.0]])
    t = torch.tensor([1, 1, 0, 2])
    for reduction in REDUCTIONS:
        for smoothing in (0.0, 0.1):
            kw = dict(reduction=reduction, label_smoothing=smoothing)
            assert_same(nbops.cross_entropy(x, t, **kw), F.cross_entropy(x, t, **kw), dict(rtol=1e-6, atol=1e-5))
    inf = torch.tensor([[float("inf"), 1.0], [-float("inf"), 0.0], [float("nan"), 0.0]])
    t = torch.tensor([0, 1, 1])
    assert_same(nbops.cross_entropy(inf, t, reduction="none"), F.cross_entropy(inf, t, reduction="none"))


def test_cross_entropy_nan_and_inf_anywhere_in_long_rows():
    # the row max runs in vector lanes: a NaN or inf in any lane, or in the remainder, must reach the loss
    x = randn((8, 1003))
    for row, col in enumerate((0, 7, 8, 500, 1002)):
        x[row, col] = float("nan")
    x[5, 333] = float("inf")
    x[6, ::3] = -float("inf")  # finite max: -inf logits just have probability 0
    x[7, 1001] = -float("inf")
    t = torch.tensor([1, 2, 3, 4, 5, 1, 4, 6])
    for smoothing in (0.0, 0.1):
        kw = dict(reduction="none", label_smoothing=smoothing)
        assert_same(nbops.cross_entropy(x, t, **kw), F.cross_entropy(x, t, **kw))


def test_cross_entropy_edge_rules_like_torch():
    x = randn((4, 5))
    all_ignored = torch.full((4,), -100)
    for reduction in REDUCTIONS:
        for smoothing in (0.0, 0.1):
            kw = dict(reduction=reduction, label_smoothing=smoothing)
            assert_same(nbops.cross_entropy(x, all_ignored, **kw), F.cross_entropy(x, all_ignored, **kw))
    t = torch.tensor([0, 1, 2, 3])
    assert_same(nbops.cross_entropy(x, t, label_smoothing=-0.1), F.cross_entropy(x, t, label_smoothing=-0.1), _tol(torch.float32))
    assert_same(nbops.cross_entropy(x, t, label_smoothing=1.0), F.cross_entropy(x, t, label_smoothing=1.0), _tol(torch.float32))
    assert_same(nbops.cross_entropy(x, t.to(torch.uint8)), F.cross_entropy(x, t.to(torch.uint8)), _tol(torch.float32))
    # probability targets of another float dtype promote, as in torch
    p = torch.softmax(randn((4, 5), torch.float64), 1)
    assert_same(nbops.cross_entropy(x, p), F.cross_entropy(x, p), _tol(torch.float32))
    with pytest.warns(UserWarning, match="reduction='sum'"):
        out = nbops.cross_entropy(x, t, size_average=False)
    assert_same(out, F.cross_entropy(x, t, reduction="sum"), _tol(torch.float32))
    assert_same(nbops.cross_entropy(x, t, None, None, -100, False), F.cross_entropy(x, t, None, None, -100, False), _tol(torch.float32))


def test_cross_entropy_layouts_numpy_and_inputs_untouched():
    x = randn((4, 6, 3, 5))
    t = _targets((4, 3, 5), 6)
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last)):
        assert_same(nbops.cross_entropy(variant, t), F.cross_entropy(variant, t), _tol(torch.float32))
    before = x.clone(), t.clone()
    out = nbops.cross_entropy(x.numpy(), t.numpy(), reduction="none")
    assert isinstance(out, np.ndarray) and out.dtype == np.float32 and out.shape == (4, 3, 5)
    np.testing.assert_allclose(out, F.cross_entropy(x, t, reduction="none").numpy(), rtol=2e-5, atol=2e-5)
    scalar = nbops.cross_entropy(x.numpy(), t.numpy())
    assert isinstance(scalar, np.ndarray) and scalar.shape == ()
    assert torch.equal(x, before[0]) and torch.equal(t, before[1])


def test_cross_entropy_bad_arguments():
    x = randn((4, 5))
    t = torch.tensor([0, 1, 2, 3])
    with pytest.raises(IndexError, match="target 5 is out of bounds"):
        nbops.cross_entropy(x, torch.tensor([0, 1, 2, 5]))
    with pytest.raises(IndexError, match="target -1 is out of bounds"):
        nbops.cross_entropy(x, torch.tensor([0, 1, 2, -1]))
    with pytest.raises(TypeError, match="int64 or uint8"):
        nbops.cross_entropy(x, t.int())
    with pytest.raises(TypeError, match="int64 or uint8"):
        nbops.cross_entropy(x, t.float())
    with pytest.raises(TypeError, match="probabilities"):
        nbops.cross_entropy(x, torch.zeros(4, 5, dtype=torch.int64))
    with pytest.raises(ValueError, match="ignore_index"):
        nbops.cross_entropy(x, torch.softmax(x, 1), ignore_index=3)
    with pytest.raises(ValueError, match="batch_size"):
        nbops.cross_entropy(x, t[:3])
    with pytest.raises(ValueError, match="target must have shape"):
        nbops.cross_entropy(randn((2, 5, 3)), torch.zeros(2, 4, dtype=torch.int64))
    with pytest.raises(ValueError, match="reduction"):
        nbops.cross_entropy(x, t, reduction="avg")
    with pytest.raises(ValueError, match="label_smoothing"):
        nbops.cross_entropy(x, t, label_smoothing=1.5)
    with pytest.raises(ValueError, match="weight"):
        nbops.cross_entropy(x, t, weight=torch.ones(4))
    with pytest.raises(TypeError, match="weight"):
        nbops.cross_entropy(x, t, weight=torch.ones(5, dtype=torch.float64))
    with pytest.raises(ValueError, match="0-d"):
        nbops.cross_entropy(torch.tensor(1.0), torch.tensor(0))
    with pytest.raises(TypeError, match="float32 or float64"):
        nbops.cross_entropy(x.long(), t)
    with pytest.raises(TypeError, match="ignore_index"):
        nbops.cross_entropy(x, t, ignore_index=1.5)
    with pytest.raises(TypeError, match="target"):
        nbops.cross_entropy(x, [0, 1, 2, 3])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((4, 5), (4, 5)), ((3, 4, 5), (5,)), ((5,), (3, 5)), ((), ()), ((0, 3), (0, 3)), ((2, 1, 3), (4, 1))])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_matches_torch(shapes, reduction, dtype):
    x = randn(shapes[0], dtype)
    y = randn(shapes[1], dtype, seed=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # broadcasting shapes warn in both
        expected = F.mse_loss(x, y, reduction=reduction)
        out = nbops.mse_loss(x, y, reduction=reduction)
        assert_same(nbops.mse_loss(input=x, target=y, reduction=reduction), expected, _tol(dtype))
    assert_same(out, expected, _tol(dtype))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mse_loss_weight_promotion_and_legacy_args(reduction):
    x, y = randn((4, 5)), randn((4, 5), seed=1)
    w = torch.rand(4, 5) + 0.1
    assert_same(nbops.mse_loss(x, y, reduction=reduction, weight=w), F.mse_loss(x, y, reduction=reduction, weight=w), _tol(torch.float32))
    assert_same(nbops.mse_loss(x, y.double(), reduction=reduction), F.mse_loss(x, y.double(), reduction=reduction), _tol(torch.float64))
    assert_same(nbops.mse_loss(x.double(), y, reduction=reduction), F.mse_loss(x.double(), y, reduction=reduction), _tol(torch.float64))
    with pytest.warns(UserWarning, match="size_average and reduce"):
        out = nbops.mse_loss(x, y, False, True)
    assert_same(out, F.mse_loss(x, y, reduction="sum"), _tol(torch.float32))
    with pytest.warns(UserWarning, match="different to the input size"):
        nbops.mse_loss(x, y[0])


def test_mse_loss_layouts_numpy_special_values():
    x, y = randn((6, 7)), randn((6, 7), seed=1)
    assert_same(nbops.mse_loss(non_contiguous(x), y.t().contiguous().t()), F.mse_loss(non_contiguous(x), y.t().contiguous().t()), _tol(torch.float32))
    out = nbops.mse_loss(x.numpy(), y.numpy(), reduction="none")
    assert isinstance(out, np.ndarray) and out.shape == (6, 7)
    scalar = nbops.mse_loss(x.numpy(), y.numpy())
    assert isinstance(scalar, np.ndarray) and scalar.shape == () and scalar.dtype == np.float32
    np.testing.assert_allclose(scalar, F.mse_loss(x, y).numpy(), rtol=1e-5)
    x[0, 0] = float("nan")
    y[1, 1] = float("inf")
    for reduction in REDUCTIONS:
        assert_same(nbops.mse_loss(x, y, reduction=reduction), F.mse_loss(x, y, reduction=reduction))


def test_mse_loss_bad_arguments():
    x = randn((4, 5))
    with pytest.raises(ValueError, match="broadcast"):
        nbops.mse_loss(x, torch.ones(3))
    with pytest.raises(ValueError, match="reduction"):
        nbops.mse_loss(x, x, reduction="avg")
    with pytest.raises(ValueError, match="weight"):
        nbops.mse_loss(x, x, weight=torch.ones(5))
    with pytest.raises(TypeError, match="float32 or float64"):
        nbops.mse_loss(x.long(), x.long())
    with pytest.raises(TypeError, match="target"):
        nbops.mse_loss(x, x.to(torch.float16))
    with pytest.raises(TypeError, match="target"):
        nbops.mse_loss(x, 1.0)
