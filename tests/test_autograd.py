"""Gradients: nbops' backward kernels through torch autograd against torch's own gradients, and
torch.autograd.gradcheck (finite differences of nbops' forward) in float64."""

import contextlib

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st
from torchvision.ops import roi_pool as tv_roi_pool

import nbops
from reference import DTYPES, SUM_TOL, assert_same, distinct, randn
from test_conv import CONV_CASES, CONVT_CASES, conv_path
from test_pooling import AVG_CASES, MAX_CASES
from test_roi import _boxes


def leaf(t):
    return t.detach().clone().requires_grad_()


def compare_grads(nbops_fn, torch_fn, inputs, tol=None, seed=7):
    """Run both functions on copies of `inputs` (leaves that require grad where the tensor does), feed
    the same random grad_output to both, and compare outputs and every input's gradient."""
    ours = [leaf(t) if isinstance(t, torch.Tensor) and t.requires_grad else t for t in inputs]
    theirs = [leaf(t) if isinstance(t, torch.Tensor) and t.requires_grad else t for t in inputs]
    out = nbops_fn(*ours)
    expected = torch_fn(*theirs)
    assert out.grad_fn is not None, "nbops' result is not part of the autograd graph"
    assert_same(out.detach(), expected.detach(), tol)
    grad_output = randn(tuple(expected.shape), expected.dtype, seed=seed)
    out.backward(grad_output)
    expected.backward(grad_output)
    checked = 0
    for mine, ref in zip(ours, theirs):
        if isinstance(ref, torch.Tensor) and ref.requires_grad:
            assert mine.grad is not None
            assert_same(mine.grad, ref.grad, tol)
            checked += 1
    assert checked


def requiring(t):
    return t.requires_grad_()


# ------------------------------------------------------------------------------------------- convolution


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batched", [True, False])
def test_conv2d_gradients_match_torch(case, batched, dtype):
    cin, cout, k, s, p, d, g, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = requiring(randn((2, cin, 9, 10) if batched else (cin, 9, 10), dtype, seed=1))
    w = requiring(randn((cout, cin // g, kh, kw), dtype, seed=2))
    b = requiring(randn((cout,), dtype, seed=3)) if has_bias else None
    compare_grads(
        lambda x, w, b: nbops.conv2d(x, w, b, s, p, d, g),
        lambda x, w, b: F.conv2d(x, w, b, s, p, d, g),
        [x, w, b],
        SUM_TOL[dtype],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONVT_CASES)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose2d_gradients_match_torch(case, batched, dtype):
    cin, cout, k, s, p, op, g, d, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = requiring(randn((2, cin, 6, 7) if batched else (cin, 6, 7), dtype, seed=1))
    w = requiring(randn((cin, cout // g, kh, kw), dtype, seed=2))
    b = requiring(randn((cout,), dtype, seed=3)) if has_bias else None
    compare_grads(
        lambda x, w, b: nbops.conv_transpose2d(x, w, b, s, p, op, g, d),
        lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, op, g, d),
        [x, w, b],
        SUM_TOL[dtype],
    )


@pytest.mark.parametrize("which", ["input", "weight", "bias"])
def test_conv_gradient_of_one_argument_only(which):
    """Only the gradients autograd asks for are computed, and they are right on their own."""
    x, w, b = randn((2, 3, 8, 8)), randn((4, 3, 3, 3), seed=1), randn((4,), seed=2)
    {"input": x, "weight": w, "bias": b}[which].requires_grad_()
    compare_grads(lambda x, w, b: nbops.conv2d(x, w, b, padding=1), lambda x, w, b: F.conv2d(x, w, b, padding=1), [x, w, b], SUM_TOL[torch.float32])
    compare_grads(  # (C_in, C_out, kH, kW) = (4, 3, 3, 3): input with 4 channels, bias of 3
        lambda x, w, b: nbops.conv_transpose2d(x, w, b[:3], stride=2),
        lambda x, w, b: F.conv_transpose2d(x, w, b[:3], stride=2),
        [randn((2, 4, 5, 5), seed=3).requires_grad_(which == "input"), w, b],
        SUM_TOL[torch.float32],
    )


@pytest.mark.parametrize("kernel,padding,stride", [((1, 3), (1, 2), 1), ((3, 3), (3, 0), 1), ((2, 3), (2, 1), (1, 2))])
def test_conv2d_input_gradient_with_padding_beyond_the_kernel(kernel, padding, stride):
    """Stride-1 input gradients are a convolution with the kernel turned round only while the padding
    is within the kernel's extent; past it they take the transposed convolution's way."""
    x = requiring(randn((2, 3, 6, 7)))
    w = requiring(randn((4, 3) + kernel, seed=1))
    compare_grads(
        lambda x, w: nbops.conv2d(x, w, None, stride, padding),
        lambda x, w: F.conv2d(x, w, None, stride, padding),
        [x, w],
        SUM_TOL[torch.float32],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [2, 3, (3, 2), (2, 3)])
def test_strided_1x1_input_gradient(stride, dtype):
    """A 1x1 kernel with a stride: its input gradient is a stride-1 1x1 convolution of grad_output,
    put every stride rows and columns of the input (_strided_into), zeros elsewhere; sizes that the
    strides do not divide."""
    x = requiring(randn((2, 3, 10, 11), dtype))
    w = requiring(randn((4, 3, 1, 1), dtype, seed=1))
    compare_grads(lambda x, w: nbops.conv2d(x, w, None, stride), lambda x, w: F.conv2d(x, w, None, stride), [x, w], SUM_TOL[dtype])


def test_conv_gradients_on_small_and_large_planes():
    """Both forward kernels (gathered pixels for small planes, whole planes for large ones) on the way
    back, and a weight gradient over many rows."""
    for shape in [(2, 8, 6, 6), (1, 4, 40, 37)]:
        x = requiring(randn(shape, seed=4))
        w = requiring(randn((6, shape[1], 3, 3), seed=5))
        compare_grads(
            lambda x, w: nbops.conv2d(x, w, None, 1, 1),
            lambda x, w: F.conv2d(x, w, None, 1, 1),
            [x, w],
            SUM_TOL[torch.float32],
        )


@pytest.mark.parametrize("path", ["planes", "tiles", "winograd"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cin,cout,kernel,stride,padding,groups,size", [
    (40, 70, 3, 1, 1, 1, (15, 13)),  # several blocks of channels and taps, runs of several samples
    (20, 66, 3, 2, 1, 2, (23, 24)),  # groups, each with a part-filled last block of channels
    (24, 40, 1, 2, 0, 1, (33, 30)),  # a 1x1 with a stride: the input positions it reads, no planes
    (24, 40, 1, 1, 0, 1, (40, 41)),  # a 1x1 without: the input itself (both expanding: input in blocks)
    (24, 40, 1, 1, 0, 1, (9, 10)),  # expanding on a small plane: grad_output in blocks
    (40, 24, 1, 1, 0, 1, (20, 21)),  # contracting: grad_output in blocks
    (400, 400, 1, 1, 0, 2, (9, 10)),  # 1x1: tasks of several blocks of channels, the last one short
    (3, 5, (2, 3), 1, (1, 0), 1, (70, 80)),  # long samples: runs of part of one
])
def test_conv2d_weight_gradient_across_blocks(path, dtype, cin, cout, kernel, stride, padding, groups, size):
    """The weight gradient's register tiles over more than one block of channels (2L), of taps (6) and
    of tasks, and over runs that hold several samples or part of one, grad_output laid out by the tasks
    ('tiles') and before them ('winograd': those of 3x3 kernels at stride 1 through Winograd); the
    plain loops too, all against torch."""
    x = requiring(randn((3, cin) + size, dtype, seed=1))
    w = requiring(randn((cout, cin // groups) + ((kernel, kernel) if isinstance(kernel, int) else kernel), dtype, seed=2))
    with conv_path(path):
        compare_grads(
            lambda x, w: nbops.conv2d(x, w, None, stride, padding, 1, groups),
            lambda x, w: F.conv2d(x, w, None, stride, padding, 1, groups),
            [x, w],
            SUM_TOL[dtype],
        )


# ----------------------------------------------------------------------------------------------- pooling


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MAX_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7)])
def test_max_pool2d_gradients_match_torch(case, shape, dtype):
    k, s, p, d, ceil = case
    x = requiring(distinct(shape, dtype))
    compare_grads(lambda x: nbops.max_pool2d(x, k, s, p, d, ceil), lambda x: F.max_pool2d(x, k, s, p, d, ceil), [x])

    def first(fn):
        return lambda x: fn(x, k, s, p, d, ceil, return_indices=True)[0]

    compare_grads(first(nbops.max_pool2d), first(F.max_pool2d), [x])


def test_max_pool2d_indices_are_not_differentiable():
    x = requiring(distinct((1, 2, 6, 6)))
    out, indices = nbops.max_pool2d(x, 2, return_indices=True)
    assert out.requires_grad and not indices.requires_grad and indices.dtype == torch.int64


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", AVG_CASES)
@pytest.mark.parametrize("shape", [(2, 3, 9, 11), (3, 8, 7)])
def test_avg_pool2d_gradients_match_torch(case, shape, dtype):
    k, s, p, ceil, cip, div = case
    x = requiring(randn(shape, dtype))
    compare_grads(
        lambda x: nbops.avg_pool2d(x, k, s, p, ceil, cip, div),
        lambda x: F.avg_pool2d(x, k, s, p, ceil, cip, div),
        [x],
    )


# ------------------------------------------------------------------------------------ activation, RoI


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_gradient_matches_torch(dtype):
    x = randn((3, 70000), dtype) * 8  # several chunks of the kernel
    x[0, :4] = torch.tensor([-200.0, 200.0, 0.0, -88.5], dtype=dtype)
    compare_grads(nbops.sigmoid, torch.sigmoid, [requiring(x)])


@pytest.mark.parametrize("dtype", DTYPES)
def test_flatten_gradient_matches_torch(dtype):
    x = requiring(randn((2, 3, 4, 5), dtype))
    for start, end in [(1, -1), (0, 2), (2, 2)]:
        compare_grads(lambda x: nbops.flatten(x, start, end) * 2, lambda x: torch.flatten(x, start, end) * 2, [x])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size,spatial_scale", [(1, 1.0), ((3, 2), 0.5), (7, 1 / 16), ((5, 9), 0.3)])
def test_roi_pool_gradient_matches_torchvision(output_size, spatial_scale, dtype):
    x = requiring(distinct((2, 3, 12, 15), dtype))
    rois = _boxes(20, 12, 15, 2, dtype, scale=spatial_scale)  # overlapping boxes: gradients add up
    compare_grads(
        lambda x: nbops.roi_pool(x, rois, output_size, spatial_scale),
        lambda x: tv_roi_pool(x, rois, output_size, spatial_scale),
        [x],
    )
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    compare_grads(
        lambda x: nbops.roi_pool(x, per_image, output_size, spatial_scale),
        lambda x: tv_roi_pool(x, per_image, output_size, spatial_scale),
        [x],
    )


# -------------------------------------------------------------------------------------------- batch norm


BN_SHAPES = [(8, 5), (4, 3, 7), (3, 4, 5, 6), (2, 3, 20, 16)]  # the last has long rows (its own kernel)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES)
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine", [True, False])
def test_batch_norm_gradients_match_torch(shape, training, affine, dtype):
    channels = shape[1]
    x = requiring(randn(shape, dtype) * 3 + 1)
    w = requiring(randn((channels,), dtype, seed=1)) if affine else None
    b = requiring(randn((channels,), dtype, seed=2)) if affine else None
    stats = {}

    def run(fn, key):
        def call(x, w, b):
            stats[key] = (torch.linspace(-1, 1, channels, dtype=dtype), torch.linspace(0.5, 2, channels, dtype=dtype))
            return fn(x, *stats[key], w, b, training, 0.1, 1e-5)

        return call

    compare_grads(run(nbops.batch_norm, "nbops"), run(F.batch_norm, "torch"), [x, w, b], SUM_TOL[dtype])
    for ours, theirs in zip(stats["nbops"], stats["torch"]):  # the running statistics, updated once
        assert_same(ours, theirs, SUM_TOL[dtype])


def test_batch_norm_training_without_running_statistics():
    x = requiring(randn((6, 4, 3, 3)))
    w, b = requiring(randn((4,), seed=1)), requiring(randn((4,), seed=2))
    compare_grads(
        lambda x, w, b: nbops.batch_norm(x, None, None, w, b, True),
        lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
        [x, w, b],
        SUM_TOL[torch.float32],
    )


# ------------------------------------------------------------------------------------------------ losses


CE_CASES = [  # (input shape, weight, ignore_index, label_smoothing, reduction)
    ((6, 5), False, -100, 0.0, "mean"),
    ((6, 5), True, -100, 0.0, "mean"),
    ((6, 5), True, 2, 0.0, "mean"),
    ((6, 5), True, 2, 0.2, "mean"),
    ((6, 5), False, 1, 0.1, "sum"),
    ((6, 5), True, 3, 0.3, "none"),
    ((5,), True, -100, 0.1, "mean"),
    ((3, 4, 2, 3), True, 0, 0.15, "mean"),
    ((3, 4, 5), False, -100, 0.0, "none"),
    ((3, 4, 5), True, 1, 0.0, "sum"),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CE_CASES)
def test_cross_entropy_class_index_gradient_matches_torch(case, dtype):
    shape, weighted, ignore_index, smoothing, reduction = case
    classes = shape[0] if len(shape) == 1 else shape[1]
    x = requiring(randn(shape, dtype) * 3)
    target_shape = () if len(shape) == 1 else (shape[0],) + shape[2:]
    target = torch.randint(0, classes, target_shape, generator=torch.Generator().manual_seed(1))
    weight = torch.rand(classes, generator=torch.Generator().manual_seed(2), dtype=torch.float64).to(dtype) if weighted else None
    kwargs = dict(weight=weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)
    compare_grads(lambda x: nbops.cross_entropy(x, target, **kwargs), lambda x: F.cross_entropy(x, target, **kwargs), [x], SUM_TOL[dtype])


def test_cross_entropy_gradient_when_every_target_is_ignored():
    x = requiring(randn((4, 3)))
    target = torch.full((4,), 2)
    ours = nbops.cross_entropy(leaf(x), target, ignore_index=2)
    assert torch.isnan(ours)
    mine = leaf(x)
    nbops.cross_entropy(mine, target, ignore_index=2, label_smoothing=0.1).backward()
    theirs = leaf(x)
    F.cross_entropy(theirs, target, ignore_index=2, label_smoothing=0.1).backward()
    assert_same(mine.grad, theirs.grad)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(6, 5), (5,), (2, 4, 3, 2)])
@pytest.mark.parametrize("weighted,smoothing,reduction", [(False, 0.0, "mean"), (True, 0.2, "sum"), (True, 0.0, "none"), (False, 0.3, "mean")])
def test_cross_entropy_probability_gradients_match_torch(shape, weighted, smoothing, reduction, dtype):
    classes = shape[0] if len(shape) == 1 else shape[1]
    x = requiring(randn(shape, dtype) * 2)
    target = requiring(torch.softmax(randn(shape, dtype, seed=3), dim=0 if len(shape) == 1 else 1))
    weight = torch.linspace(0.5, 1.5, classes, dtype=dtype) if weighted else None
    kwargs = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    compare_grads(
        lambda x, t: nbops.cross_entropy(x, t, **kwargs), lambda x, t: F.cross_entropy(x, t, **kwargs), [x, target], SUM_TOL[dtype]
    )


MSE_CASES = [  # (input shape, target shape, weighted, reduction)
    ((4, 5), (4, 5), False, "mean"),
    ((4, 5), (4, 5), False, "sum"),
    ((4, 5), (4, 5), False, "none"),
    ((4, 5), (4, 5), True, "mean"),
    ((4, 5), (4, 5), True, "sum"),
    ((4, 5), (4, 5), True, "none"),
    ((4, 1), (3, 4, 5), False, "mean"),  # broadcasting both ways
    ((4, 1), (4, 5), True, "mean"),  # a weight broadcast over target's columns
    ((70000,), (70000,), True, "mean"),  # several chunks
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", MSE_CASES)
def test_mse_loss_gradients_match_torch(case, dtype):
    x_shape, y_shape, weighted, reduction = case
    x = requiring(randn(x_shape, dtype))
    y = requiring(randn(y_shape, dtype, seed=1))
    w = requiring(torch.rand(x_shape, generator=torch.Generator().manual_seed(2), dtype=dtype)) if weighted else None
    with pytest.warns(UserWarning) if x_shape != y_shape else contextlib.nullcontext():
        compare_grads(
            lambda x, y, w: nbops.mse_loss(x, y, reduction=reduction, weight=w),
            lambda x, y, w: F.mse_loss(x, y, reduction=reduction, weight=w),
            [x, y, w],
            SUM_TOL[dtype],
        )


def test_mse_loss_gradient_with_mixed_dtypes():
    x = requiring(randn((3, 4), torch.float32))
    y = requiring(randn((3, 4), torch.float64, seed=1))
    compare_grads(nbops.mse_loss, F.mse_loss, [x, y], SUM_TOL[torch.float32])


# ------------------------------------------------------------------------------ gradcheck (float64)


def _gradcheck(fn, *inputs):
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-6, rtol=1e-5)


def test_gradcheck_convolutions():
    x = requiring(randn((2, 4, 6, 5), torch.float64))
    w = requiring(randn((6, 2, 3, 2), torch.float64, seed=1))
    b = requiring(randn((6,), torch.float64, seed=2))
    _gradcheck(lambda x, w, b: nbops.conv2d(x, w, b, (2, 1), 1, (1, 2), 2), x, w, b)
    _gradcheck(lambda x, w, b: nbops.conv2d(x, w, b, 1, "same", 2, 2), x, w, b)
    wt = requiring(randn((4, 3, 3, 2), torch.float64, seed=3))
    _gradcheck(lambda x, w, b: nbops.conv_transpose2d(x, w, b, 2, 1, (1, 0), 2, 1), x, wt, b)


def test_gradcheck_pooling_and_roi():
    x = requiring(distinct((2, 3, 7, 8), torch.float64))
    _gradcheck(lambda x: nbops.max_pool2d(x, 3, 2, 1, 1, True), x)
    _gradcheck(lambda x: nbops.max_pool2d(x, (2, 3), 1, 0, (2, 1)), x)
    _gradcheck(lambda x: nbops.avg_pool2d(x, 3, 2, 1, True, False), x)
    _gradcheck(lambda x: nbops.avg_pool2d(x, 2, 1, 1, False, True, 3), x)
    rois = _boxes(6, 7, 8, 2, torch.float64)
    _gradcheck(lambda x: nbops.roi_pool(x, rois, (3, 2), 1.0), x)


def test_gradcheck_elementwise_and_normalization():
    x = requiring(randn((3, 4, 5), torch.float64))
    _gradcheck(nbops.sigmoid, x)
    _gradcheck(lambda x: nbops.flatten(x, 1), x)
    w, b = requiring(randn((4,), torch.float64, seed=1)), requiring(randn((4,), torch.float64, seed=2))
    _gradcheck(lambda x, w, b: nbops.batch_norm(x, None, None, w, b, True), x, w, b)
    mean, var = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64)
    _gradcheck(lambda x, w, b: nbops.batch_norm(x, mean, var, w, b, False), x, w, b)


def test_gradcheck_losses():
    x = requiring(randn((5, 4, 3), torch.float64))
    target = torch.tensor([[0, 1, 3], [2, 2, 0], [3, 1, 1], [0, 0, 2], [1, 3, 3]])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5], dtype=torch.float64)
    _gradcheck(lambda x: nbops.cross_entropy(x, target, weight, ignore_index=1, label_smoothing=0.1), x)
    probs = requiring(torch.softmax(randn((5, 4, 3), torch.float64, seed=1), dim=1))
    _gradcheck(lambda x, t: nbops.cross_entropy(x, t, weight, reduction="sum", label_smoothing=0.2), x, probs)
    y = requiring(randn((5, 4, 3), torch.float64, seed=2))
    w = requiring(torch.rand((5, 4, 3), dtype=torch.float64, generator=torch.Generator().manual_seed(3)))
    _gradcheck(lambda x, y, w: nbops.mse_loss(x, y, weight=w), x, y, w)
    _gradcheck(lambda x, y: nbops.mse_loss(x, y, reduction="none"), x, y)


# ----------------------------------------------------------------------------------------------- rules


def test_results_without_grad_stay_plain():
    x = randn((1, 2, 4, 4)).requires_grad_()
    with torch.no_grad():
        assert nbops.max_pool2d(x, 2).grad_fn is None
    assert nbops.max_pool2d(x.detach(), 2).grad_fn is None
    assert isinstance(nbops.sigmoid(np.zeros(3)), np.ndarray)


def test_gradient_of_a_gradient_is_a_clear_error():
    x = requiring(randn((2, 3), torch.float64))
    (grad,) = torch.autograd.grad(nbops.sigmoid(x).square().sum(), x, create_graph=True)
    with pytest.raises(RuntimeError, match="once_differentiable|double backward|twice"):
        grad.sum().backward()


def test_ndarray_input_with_a_weight_that_requires_grad_is_a_type_error():
    with pytest.raises(TypeError, match="input must be a torch.Tensor"):
        nbops.conv2d(np.zeros((1, 1, 3, 3), np.float32), torch.zeros(1, 1, 2, 2, requires_grad=True))


def test_cross_entropy_weight_that_requires_grad_is_refused():
    with pytest.raises(RuntimeError, match="weight"):
        nbops.cross_entropy(randn((3, 4)).requires_grad_(), torch.tensor([0, 1, 2]), torch.ones(4, requires_grad=True))


def test_input_changed_in_place_before_backward_is_an_error():
    x = requiring(randn((2, 3, 5, 5)))
    w = requiring(randn((4, 3, 3, 3)))
    xi = x * 1
    out = nbops.conv2d(xi, w)
    xi.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_backward_does_not_modify_saved_tensors():
    x = requiring(randn((4, 3, 5, 5)))
    w = requiring(randn((3,)))
    before = x.detach().clone()
    nbops.batch_norm(x, None, None, w, None, True).square().sum().backward()
    assert torch.equal(x.detach(), before)


def test_gradients_are_the_leaves_dtype_and_shape():
    for dtype in DTYPES:
        x = requiring(randn((3, 5, 5), dtype))  # unbatched
        w = requiring(randn((2, 3, 3, 3), dtype))
        nbops.conv2d(x, w, padding=1).sum().backward()
        assert x.grad.shape == x.shape and x.grad.dtype == dtype
        assert w.grad.shape == w.shape and w.grad.dtype == dtype



def test_conv_weight_gradient_with_infinite_inputs_like_torch():
    """An inf that only some taps read: the other taps' gradients stay finite, as in torch (the fast
    kernel's thrown-away columns would have made them NaN)."""
    x = randn((2, 2, 5, 7))
    x[0, 1, 2, 6] = float("inf")
    x[1, 0, 0, 0] = float("-inf")
    w = randn((3, 2, 1, 3), seed=1)
    for stride in (1, 2):
        xa, wa = leaf(x), requiring(w.clone())
        xb, wb = leaf(x), requiring(w.clone())
        g = randn(tuple(F.conv2d(x, w, stride=stride).shape), seed=2)
        nbops.conv2d(xa, wa, stride=stride).backward(g)
        F.conv2d(xb, wb, stride=stride).backward(g)
        assert_same(wa.grad, wb.grad, SUM_TOL[torch.float32])
        assert torch.isfinite(wa.grad).any() and not torch.isfinite(wa.grad).all()


def _every_window_reaches_input(out_size, size, kernel, stride, pad, dilation):
    return all(any(0 <= o * stride - pad + m * dilation < size for m in range(kernel)) for o in range(out_size))


@pytest.mark.parametrize("shape,args", [
    ((1, 2, 1, 7), ((2, 4), (1, 3), (1, 2), (2, 1), False)),  # rows -1 and 1 of a 1-row input
    ((2, 1, 3, 2), ((1, 2), 1, (0, 1), (1, 3), False)),  # columns -1 and 2 of a 2-column input
])
def test_max_pool2d_window_of_padding_only_passes_no_gradient(shape, args):
    """A window that holds no input element outputs -inf whatever the input, so no input gets its
    gradient. (torch's own backward writes outside the input there: its index is the 'first position'
    past the window, and running it corrupts memory, so torch is not run here.)"""
    x = requiring(distinct(shape, torch.float64))
    out = nbops.max_pool2d(x, *args)
    assert torch.all(out == float("-inf"))
    assert not _every_window_reaches_input(out.shape[2], shape[2], args[0][0], *[a if isinstance(a, int) else a[0] for a in args[1:4]]) or \
        not _every_window_reaches_input(out.shape[3], shape[3], args[0][1], *[a if isinstance(a, int) else a[1] for a in args[1:4]])
    out.backward(torch.ones_like(out))
    assert torch.equal(x.grad, torch.zeros_like(x))


# ------------------------------------------------------------------------- properties (hypothesis)


def _valid(torch_fn, *args):
    """torch's verdict on a configuration, judged on a batch of one (torch skips checks when N == 0)."""
    try:
        torch_fn(*args)
    except RuntimeError:
        return False
    return True


# the plain loops ('planes') and the register tiles in both dtypes (the weight gradient's tiles run
# float64 too)
GRADIENT_PATHS = [
    ("planes", torch.float64), ("tiles", torch.float64), ("tiles", torch.float32),
    ("winograd", torch.float64), ("winograd", torch.float32), ("depthwise", torch.float64), ("depthwise", torch.float32),
]


@pytest.mark.parametrize("path,dtype", GRADIENT_PATHS)
@given(
    n=st.integers(0, 2), groups=st.integers(1, 3), cin_per=st.integers(1, 3), cout_per=st.integers(1, 3),
    h=st.integers(1, 9), w=st.integers(1, 9), kh=st.integers(1, 4), kw=st.integers(1, 4),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 3), pw=st.integers(0, 3),
    dh=st.integers(1, 3), dw=st.integers(1, 3), bias=st.booleans(), same=st.booleans(),
)
def test_conv2d_gradient_property(path, dtype, n, groups, cin_per, cout_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw, bias, same):
    x = randn((n, groups * cin_per, h, w), dtype, seed=h + w)
    weight = randn((groups * cout_per, cin_per, kh, kw), dtype, seed=kh)
    b = randn((groups * cout_per,), dtype, seed=3) if bias else None
    padding = "same" if same else (ph, pw)
    stride = (1, 1) if same else (sh, sw)
    args = (stride, padding, (dh, dw), groups)
    if not _valid(F.conv2d, randn((1,) + x.shape[1:], dtype), weight, b, *args):
        return
    _compare_conv_grads(path, dtype, nbops.conv2d, F.conv2d, x, weight, b, args)


@pytest.mark.parametrize("path,dtype", GRADIENT_PATHS)
@given(
    n=st.integers(0, 2), groups=st.integers(1, 3), cin_per=st.integers(1, 3), cout_per=st.integers(1, 3),
    h=st.integers(1, 6), w=st.integers(1, 6), kh=st.integers(1, 4), kw=st.integers(1, 4),
    sh=st.integers(1, 3), sw=st.integers(1, 3), ph=st.integers(0, 3), pw=st.integers(0, 3),
    dh=st.integers(1, 3), dw=st.integers(1, 3), oph=st.integers(0, 2), opw=st.integers(0, 2), bias=st.booleans(),
)
def test_conv_transpose2d_gradient_property(path, dtype, n, groups, cin_per, cout_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oph, opw, bias):
    x = randn((n, groups * cin_per, h, w), dtype, seed=h + w)
    weight = randn((groups * cin_per, cout_per, kh, kw), dtype, seed=kw)
    b = randn((groups * cout_per,), dtype, seed=3) if bias else None
    args = ((sh, sw), (ph, pw), (oph, opw), groups, (dh, dw))
    if not _valid(F.conv_transpose2d, randn((1,) + x.shape[1:], dtype), weight, b, *args):
        return
    if min(F.conv_transpose2d(randn((1,) + x.shape[1:], dtype), weight, b, *args).shape[2:]) <= 0:
        return  # (torch's float32 path returns an empty output where its float64 path and nbops raise)
    _compare_conv_grads(path, dtype, nbops.conv_transpose2d, F.conv_transpose2d, x, weight, b, args)


def _compare_conv_grads(path, dtype, ours, theirs, x, weight, b, args):
    """compare_grads of a convolution with the extra arguments args, through one kernel path."""
    with conv_path(path):
        compare_grads(
            lambda x, weight, b: ours(x, weight, b, *args),
            lambda x, weight, b: theirs(x, weight, b, *args),
            [requiring(x), requiring(weight), requiring(b) if b is not None else None],
            SUM_TOL[dtype],
        )


@given(
    n=st.integers(0, 2), c=st.integers(1, 3), h=st.integers(1, 9), w=st.integers(1, 9),
    kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
    dh=st.integers(1, 3), dw=st.integers(1, 3), ceil=st.booleans(), cip=st.booleans(),
    div=st.sampled_from([None, 1, 3, -2]), data=st.data(),
)
def test_pooling_gradient_property(n, c, h, w, kh, kw, sh, sw, dh, dw, ceil, cip, div, data):
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    x = distinct((n, c, h, w), torch.float64, seed=h * w)
    max_args = ((kh, kw), (sh, sw), (ph, pw), (dh, dw), ceil)
    valid = _valid(F.max_pool2d, distinct((1, c, h, w), torch.float64), *max_args)
    out_h, out_w = (F.max_pool2d(distinct((1, 1, h, w)), *max_args).shape[2:]) if valid else (0, 0)
    # torch's backward writes outside the input for a window of padding only (see the test above)
    if valid and _every_window_reaches_input(out_h, h, kh, sh, ph, dh) and _every_window_reaches_input(out_w, w, kw, sw, pw, dw):
        compare_grads(lambda x: nbops.max_pool2d(x, *max_args), lambda x: F.max_pool2d(x, *max_args), [requiring(x)])
    avg_args = ((kh, kw), (sh, sw), (ph, pw), ceil, cip, div)
    if _valid(F.avg_pool2d, distinct((1, c, h, w), torch.float64), *avg_args):
        compare_grads(lambda x: nbops.avg_pool2d(x, *avg_args), lambda x: F.avg_pool2d(x, *avg_args), [requiring(x)])


def test_gradients_of_strided_and_channels_last_inputs():
    x = randn((2, 3, 8, 8))
    for variant in (x.contiguous(memory_format=torch.channels_last), x[:, :, :, ::1].transpose(2, 3)):
        w = randn((4, 3, 3, 3), seed=1).contiguous(memory_format=torch.channels_last)
        compare_grads(
            lambda x, w: nbops.conv2d(x, w, None, 2, 1), lambda x, w: F.conv2d(x, w, None, 2, 1),
            [requiring(variant.clone()), requiring(w)], SUM_TOL[torch.float32],
        )
        compare_grads(lambda x: nbops.max_pool2d(x, 2), lambda x: F.max_pool2d(x, 2), [requiring(distinct((2, 3, 8, 8)).transpose(2, 3))])


def test_numpy_backward_passes_without_autograd():
    """The CPU backend's drivers on plain arrays: run_conv2d, then run_conv2d_backward returns arrays."""
    from nbops.cpu import conv

    x, w, b = randn((2, 3, 7, 6), torch.float64), randn((4, 3, 3, 3), torch.float64, seed=1), randn((4,), torch.float64, seed=2)
    options = ((2, 2), (1, 1), (1, 1), (1, 1), 1)  # stride, padding before and after, dilation, groups
    out = conv.run_conv2d(x.numpy(), w.numpy(), b.numpy(), *options, (4, 3))
    grad_output = randn(out.shape, torch.float64, seed=3)
    grads = conv.run_conv2d_backward(grad_output.numpy(), x.numpy(), w.numpy(), *options)
    xa, wa, ba = leaf(x), leaf(w), leaf(b)
    expected = F.conv2d(xa, wa, ba, 2, 1)
    assert_same(torch.from_numpy(out), expected.detach(), SUM_TOL[torch.float64])
    expected.backward(grad_output)
    for mine, ref in zip(grads, (xa.grad, wa.grad, ba.grad)):
        assert isinstance(mine, np.ndarray)
        assert_same(torch.from_numpy(mine), ref, SUM_TOL[torch.float64])


# --------------------------------------------------------------------------- 0-d and empty arguments


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_mse_loss_gradients_of_0d_tensors(reduction, weighted, dtype):
    """0-d input, target and weight that all require grad: every gradient a 0-d tensor, as in torch."""
    x = requiring(torch.tensor(0.7, dtype=dtype))
    y = requiring(torch.tensor(-0.4, dtype=dtype))
    w = requiring(torch.tensor(1.3, dtype=dtype)) if weighted else None
    compare_grads(
        lambda x, y, w: nbops.mse_loss(x, y, reduction=reduction, weight=w),
        lambda x, y, w: F.mse_loss(x, y, reduction=reduction, weight=w),
        [x, y, w],
        SUM_TOL[dtype],
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted,smoothing", [(False, 0.0), (True, 0.0), (False, 0.2), (True, 0.1)])
@pytest.mark.parametrize("shape", [(0, 4, 3), (0, 4, 2, 3), (0, 4)])
def test_cross_entropy_gradients_of_an_empty_batch(shape, weighted, smoothing, reduction, dtype):
    """(0, C, d1, ...) logits, class-index and probability targets: zero gradients of the input's shape."""
    classes = shape[1]
    weight = torch.linspace(0.5, 1.5, classes, dtype=dtype) if weighted else None
    kwargs = dict(weight=weight, reduction=reduction, label_smoothing=smoothing)
    x = requiring(randn(shape, dtype))
    indices = torch.zeros((0,) + shape[2:], dtype=torch.int64)
    compare_grads(lambda x: nbops.cross_entropy(x, indices, **kwargs), lambda x: F.cross_entropy(x, indices, **kwargs), [x])
    probabilities = requiring(torch.zeros(shape, dtype=dtype))
    compare_grads(
        lambda x, t: nbops.cross_entropy(x, t, **kwargs), lambda x, t: F.cross_entropy(x, t, **kwargs), [x, probabilities]
    )


EMPTY_BATCH_CASES = {  # every operator with gradients, on a batch of 0 samples (torch as the reference)
    "conv2d": (lambda f, x, w, b: f.conv2d(x, w, b, 2, 1), (0, 3, 5, 6), (4, 3, 3, 3), (4,)),
    "conv_transpose2d": (lambda f, x, w, b: f.conv_transpose2d(x, w, b, 2, 1, 1), (0, 3, 5, 6), (3, 4, 3, 3), (4,)),
    "max_pool2d": (lambda f, x: f.max_pool2d(x, 3, 2, 1), (0, 3, 7, 6)),
    "avg_pool2d": (lambda f, x: f.avg_pool2d(x, 3, 2, 1), (0, 3, 7, 6)),
    "sigmoid": (lambda f, x: f.sigmoid(x) if f is nbops else torch.sigmoid(x), (0, 3, 2)),
    "batch_norm": (lambda f, x, w, b: f.batch_norm(x, torch.zeros(3, dtype=x.dtype), torch.ones(3, dtype=x.dtype), w, b, False), (0, 3, 4), (3,), (3,)),
    "mse_loss": (lambda f, x, y: f.mse_loss(x, y, reduction="sum"), (0, 3), (0, 3)),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(EMPTY_BATCH_CASES))
def test_gradients_of_an_empty_batch(name, dtype):
    fn, *shapes = EMPTY_BATCH_CASES[name]
    inputs = [requiring(randn(shape, dtype, seed=i)) for i, shape in enumerate(shapes)]
    compare_grads(lambda *args: fn(nbops, *args), lambda *args: fn(F, *args), inputs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool_gradient_without_boxes(dtype):
    x = requiring(randn((2, 3, 6, 5), dtype))
    boxes = torch.zeros((0, 5), dtype=dtype)
    compare_grads(lambda x: nbops.roi_pool(x, boxes, 2), lambda x: tv_roi_pool(x, boxes, 2), [x])


@pytest.mark.parametrize("training", [False, True])
@pytest.mark.parametrize("shape,channels", [((0,), 3), ((0, 3), 5), ((0, 3, 2), 3)])  # (torch's own backward fails at 0 channels)
def test_batch_norm_gradients_of_inputs_without_elements(shape, channels, training):
    """torch takes an input without elements whatever the other arguments' sizes; so does nbops, and the
    gradients are zeros of each argument's own shape."""
    x = requiring(randn(shape))
    w = requiring(torch.rand(channels, generator=torch.Generator().manual_seed(1)))
    b = requiring(randn((channels,), seed=2))
    compare_grads(
        lambda x, w, b: nbops.batch_norm(x, torch.zeros(channels), torch.ones(channels), w, b, training),
        lambda x, w, b: F.batch_norm(x, torch.zeros(channels), torch.ones(channels), w, b, training),
        [x, w, b],
    )
