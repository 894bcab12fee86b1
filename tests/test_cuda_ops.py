"""The cuda backend against torch (CPU), on tiny shapes: on a GPU, or without one under Numba's simulator
(NUMBA_ENABLE_CUDASIM=1, as CI runs it: `NUMBA_ENABLE_CUDASIM=1 pytest tests/test_cuda_ops.py`).
Skipped where neither is available. Every test also checks that the GPU kernels ran (their launch
counts) and that no CPU kernel did."""

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from torchvision.ops import roi_pool as tv_roi_pool

import nbops
from reference import DTYPES, SUM_TOL, assert_same, distinct, randn
from test_roi import _boxes

cuda = pytest.importorskip("numba.cuda")
if not cuda.is_available():
    pytest.skip("no CUDA GPU and NUMBA_ENABLE_CUDASIM is not set", allow_module_level=True)

from nbops import _dispatch  # noqa: E402
from nbops.cuda import _device  # noqa: E402


@pytest.fixture(autouse=True)
def gpu(monkeypatch):
    """The cuda backend, small blocks (tiny inputs still span several), and no CPU kernel allowed."""
    monkeypatch.setattr(_device, "THREADS", 16)

    def no_cpu(family):
        raise AssertionError(f"a CPU kernel ({family}) ran on the cuda backend")

    monkeypatch.setattr(_dispatch, "cpu", no_cpu)
    with nbops.use_backend("cuda"):
        yield


def ran(*kernels):
    """A context that checks each named kernel was launched inside it."""

    class Check:
        def __enter__(self):
            self.before = {k: _device.LAUNCHES[k] for k in kernels}

        def __exit__(self, *exc):
            if exc[0] is None:
                for k in kernels:
                    assert _device.LAUNCHES[k] > self.before[k], f"{k} did not run"

    return Check()


def on_device(t):
    return cuda.to_device(t.numpy())


def from_device(array):
    return torch.from_numpy(array.copy_to_host())


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [(2, None, 0, 1, False), (3, 2, 1, 1, True), ((3, 2), (2, 1), (1, 0), (2, 1), False)])
def test_max_pool2d_on_gpu(case, dtype):
    k, s, p, d, ceil = case
    x = distinct((2, 3, 7, 8), dtype)
    expected, expected_idx = F.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    with ran("_max_pool2d"):
        out, idx = nbops.max_pool2d(x, k, s, p, d, ceil, return_indices=True)
    assert_same(out, expected)
    assert_same(idx, expected_idx)
    assert_same(torch.from_numpy(nbops.max_pool2d(x.numpy(), k, s, p, d, ceil)), expected)
    assert_same(from_device(nbops.max_pool2d(on_device(x), k, s, p, d, ceil)), expected)  # stays on the GPU


@pytest.mark.parametrize("case", [(2, None, 0, False, True, None), (3, 2, 1, True, False, None), (3, 2, 1, False, True, 5)])
def test_avg_pool2d_on_gpu(case):
    x = randn((2, 3, 7, 8))
    with ran("_avg_pool2d"):
        assert_same(nbops.avg_pool2d(x, *case), F.avg_pool2d(x, *case))
    assert_same(nbops.avg_pool2d(x[0], *case), F.avg_pool2d(x[0], *case))  # unbatched


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", [
    (4, 6, 3, 1, 1, 1, 1, True),
    (4, 6, (3, 2), (2, 1), (1, 0), (1, 2), 2, False),
    (3, 4, (4, 2), 1, "same", (1, 2), 1, True),
])
def test_conv2d_on_gpu(case, dtype):
    cin, cout, k, s, p, d, g, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = randn((2, cin, 7, 6), dtype, seed=1)
    w = randn((cout, cin // g, kh, kw), dtype, seed=2)
    b = randn((cout,), dtype, seed=3) if has_bias else None
    with ran("_conv2d_tiled" if dtype == torch.float32 else "_conv2d"):
        assert_same(nbops.conv2d(x, w, b, s, p, d, g), F.conv2d(x, w, b, s, p, d, g), SUM_TOL[dtype])
    assert_same(nbops.conv2d(x[0], w, b, s, p, d, g), F.conv2d(x[0], w, b, s, p, d, g), SUM_TOL[dtype])


@pytest.mark.parametrize("case", [(4, 2, 2, 2, 0, 0, 1, 1, True), (4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, 1, False), (2, 3, 3, 1, 0, 2, 1, 3, True)])
def test_conv_transpose2d_on_gpu(case):
    cin, cout, k, s, p, op, g, d, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    x = randn((2, cin, 4, 5), seed=1)
    w = randn((cin, cout // g, kh, kw), seed=2)
    b = randn((cout,), seed=3) if has_bias else None
    with ran("_conv_transpose2d"):
        assert_same(nbops.conv_transpose2d(x, w, b, s, p, op, g, d), F.conv_transpose2d(x, w, b, s, p, op, g, d), SUM_TOL[torch.float32])


def test_sigmoid_and_flatten_on_gpu():
    x = randn((3, 50)) * 8
    x[0, :3] = torch.tensor([-200.0, 200.0, float("nan")])
    with ran("_sigmoid"):
        assert_same(nbops.sigmoid(x), torch.sigmoid(x))
    device = on_device(x)
    assert_same(from_device(nbops.sigmoid(device)), torch.sigmoid(x))
    assert nbops.flatten(device).shape == (150,)


def test_roi_pool_on_gpu():
    x = distinct((2, 3, 10, 12))
    rois = _boxes(9, 10, 12, 2, torch.float32, scale=0.5)
    with ran("_roi_pool"):
        assert_same(nbops.roi_pool(x, rois, (3, 2), 0.5), tv_roi_pool(x, rois, (3, 2), 0.5), dict(rtol=0, atol=0))
    per_image = [rois[rois[:, 0] == i, 1:] for i in range(2)]
    assert_same(from_device(nbops.roi_pool(on_device(x), per_image, 2, 0.5)), tv_roi_pool(x, per_image, 2, 0.5), dict(rtol=0, atol=0))


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5), (2, 3, 4, 4)])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_on_gpu(shape, training):
    x = randn(shape) * 2 + 1
    c = shape[1]
    w, b = randn((c,), seed=1), randn((c,), seed=2)
    rm, rv = torch.linspace(-1, 1, c), torch.linspace(0.5, 2, c)
    rm2, rv2 = rm.clone(), rv.clone()
    with ran("_normalize"):
        out = nbops.batch_norm(x, rm, rv, w, b, training, 0.1, 1e-5)
    assert_same(out, F.batch_norm(x, rm2, rv2, w, b, training, 0.1, 1e-5), SUM_TOL[torch.float32])
    assert_same(rm, rm2, SUM_TOL[torch.float32])  # running statistics updated in place (host arrays)
    assert_same(rv, rv2, SUM_TOL[torch.float32])
    if training:
        assert_same(nbops.batch_norm(x, None, None, None, None, True), F.batch_norm(x, None, None, None, None, True), SUM_TOL[torch.float32])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_on_gpu(reduction):
    x = randn((5, 4, 3)) * 3
    target = torch.tensor([[0, 1, 3], [2, 2, 0], [3, 1, 1], [0, 0, 2], [1, 3, 3]])
    weight = torch.tensor([0.5, 1.0, 2.0, 1.5])
    kwargs = dict(weight=weight, ignore_index=1, label_smoothing=0.1, reduction=reduction)
    with ran("_cross_entropy_class"):
        assert_same(nbops.cross_entropy(x, target, **kwargs), F.cross_entropy(x, target, **kwargs), SUM_TOL[torch.float32])
    probs = torch.softmax(randn((5, 4, 3), seed=1), dim=1)
    with ran("_cross_entropy_prob"):
        assert_same(nbops.cross_entropy(x, probs, reduction=reduction), F.cross_entropy(x, probs, reduction=reduction), SUM_TOL[torch.float32])
    assert_same(nbops.cross_entropy(x[0, :, 0], target[0, 0], reduction=reduction), F.cross_entropy(x[0, :, 0], target[0, 0], reduction=reduction), SUM_TOL[torch.float32])
    with pytest.raises(IndexError, match="out of bounds"):
        nbops.cross_entropy(x, target + 3)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_mse_loss_on_gpu(reduction):
    x, y = randn((4, 5)), randn((4, 5), seed=1)
    w = torch.rand((4, 5), generator=torch.Generator().manual_seed(2))
    with ran("_squared_error" if reduction == "none" else "_squared_error_sum"):
        assert_same(nbops.mse_loss(x, y, reduction=reduction), F.mse_loss(x, y, reduction=reduction), SUM_TOL[torch.float32])
    assert_same(nbops.mse_loss(x, y, reduction=reduction, weight=w), F.mse_loss(x, y, reduction=reduction, weight=w), SUM_TOL[torch.float32])
    with pytest.warns(UserWarning):
        assert_same(nbops.mse_loss(x[:, :1], y, reduction=reduction), F.mse_loss(x[:, :1], y, reduction=reduction), SUM_TOL[torch.float32])


def test_empty_inputs_on_gpu():
    x = torch.zeros((0, 2, 4, 4))
    assert nbops.max_pool2d(x, 2).shape == (0, 2, 2, 2)
    assert nbops.conv2d(x, torch.zeros(3, 2, 3, 3)).shape == (0, 3, 2, 2)
    assert nbops.sigmoid(torch.zeros(0)).shape == (0,)


def test_gradients_are_refused_on_gpu():
    with pytest.raises(NotImplementedError, match="cuda backend"):
        nbops.sigmoid(torch.zeros(3, requires_grad=True))


def test_backend_switch():
    assert nbops.get_backend() == "cuda"
    with nbops.use_backend("cpu"):
        assert nbops.get_backend() == "cpu"
    assert nbops.get_backend() == "cuda"
    with pytest.raises(ValueError, match="backend must be one of"):
        nbops.use_backend("tpu").__enter__()


def test_conv2d_tiles_on_gpu():
    """float32 conv2d through the tiled kernel across several tiles of channels, pixels and taps, with
    groups, stride, dilation and padding."""
    x = randn((2, 6, 9, 8), seed=4)
    w = randn((68, 3, 3, 2), seed=5)
    b = randn((68,), seed=6)
    with ran("_conv2d_tiled"):
        assert_same(nbops.conv2d(x, w, b, (2, 1), (1, 0), (1, 2), 2), F.conv2d(x, w, b, (2, 1), (1, 0), (1, 2), 2), SUM_TOL[torch.float32])


@settings(max_examples=8, deadline=None)  # (the simulator runs a kernel's threads in Python: slowly)
@given(
    n=st.integers(1, 2), groups=st.integers(1, 2), cin_per=st.integers(1, 3), cout_per=st.integers(1, 3),
    h=st.integers(1, 6), w=st.integers(1, 6), kh=st.integers(1, 3), kw=st.integers(1, 3),
    sh=st.integers(1, 2), sw=st.integers(1, 2), ph=st.integers(0, 2), pw=st.integers(0, 2),
    dh=st.integers(1, 2), dw=st.integers(1, 2), transposed=st.booleans(), dtype=st.sampled_from(DTYPES),
)
def test_convolution_property_on_gpu(n, groups, cin_per, cout_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw, transposed, dtype):
    x = randn((n, groups * cin_per, h, w), dtype, seed=h + w)
    if transposed:
        weight = randn((groups * cin_per, cout_per, kh, kw), dtype, seed=kw)
        args = ((sh, sw), (ph, pw), 0, groups, (dh, dw))
        torch_fn, nbops_fn = F.conv_transpose2d, nbops.conv_transpose2d
    else:
        weight = randn((groups * cout_per, cin_per, kh, kw), dtype, seed=kh)
        args = ((sh, sw), (ph, pw), (dh, dw), groups)
        torch_fn, nbops_fn = F.conv2d, nbops.conv2d
    try:
        expected = torch_fn(x, weight, None, *args)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops_fn(x, weight, None, *args)
        return
    if transposed and min(expected.shape[2:]) <= 0:  # torch's float32 path returns an empty output where
        with pytest.raises(ValueError, match="not positive"):  # its float64 path raises, as nbops does
            nbops_fn(x, weight, None, *args)
        return
    assert_same(nbops_fn(x, weight, None, *args), expected, SUM_TOL[dtype])


@settings(max_examples=8, deadline=None)
@given(
    h=st.integers(1, 7), w=st.integers(1, 7), kh=st.integers(1, 3), kw=st.integers(1, 3), sh=st.integers(1, 3),
    sw=st.integers(1, 3), ceil=st.booleans(), cip=st.booleans(), data=st.data(),
)
def test_pooling_property_on_gpu(h, w, kh, kw, sh, sw, ceil, cip, data):
    ph = data.draw(st.integers(0, kh // 2))
    pw = data.draw(st.integers(0, kw // 2))
    x = distinct((1, 2, h, w), torch.float64)
    for torch_fn, nbops_fn, args in (
        (F.max_pool2d, nbops.max_pool2d, ((kh, kw), (sh, sw), (ph, pw), 1, ceil)),
        (F.avg_pool2d, nbops.avg_pool2d, ((kh, kw), (sh, sw), (ph, pw), ceil, cip)),
    ):
        try:
            expected = torch_fn(x, *args)
        except RuntimeError:
            continue
        assert_same(nbops_fn(x, *args), expected)


def test_device_arrays_in_place_and_out():
    """Numba device arrays stay on the GPU: results are device arrays; batch norm updates device
    running statistics in place; RoI boxes may live on the GPU too; mixed dtypes promote as in torch."""
    x = randn((4, 3, 5, 5)) * 2 + 1
    rm, rv = torch.zeros(3), torch.ones(3)
    rm_d, rv_d = on_device(rm), on_device(rv)
    out = nbops.batch_norm(on_device(x), rm_d, rv_d, None, None, True, 0.1, 1e-5)
    expected = F.batch_norm(x, rm, rv, None, None, True, 0.1, 1e-5)
    assert_same(from_device(out), expected, SUM_TOL[torch.float32])
    assert_same(from_device(rm_d), rm, SUM_TOL[torch.float32])
    assert_same(from_device(rv_d), rv, SUM_TOL[torch.float32])
    rois = _boxes(5, 5, 5, 4, torch.float32)
    assert_same(from_device(nbops.roi_pool(on_device(x), on_device(rois), 2)), tv_roi_pool(x, rois, 2), dict(rtol=0, atol=0))
    y64 = randn((4, 3, 5, 5), torch.float64, seed=1)
    loss = nbops.mse_loss(on_device(x), on_device(y64))
    assert_same(from_device(loss), F.mse_loss(x, y64), SUM_TOL[torch.float64])
    target = torch.tensor([0, 2, 1, 1])
    logits = randn((4, 3))
    assert_same(from_device(nbops.cross_entropy(on_device(logits), on_device(target), reduction="none")),
                F.cross_entropy(logits, target, reduction="none"), SUM_TOL[torch.float32])


def test_strided_host_inputs_on_gpu():
    x = randn((2, 3, 8, 8)).contiguous(memory_format=torch.channels_last)
    w = randn((4, 3, 3, 3), seed=1).transpose(2, 3)  # strided
    assert_same(nbops.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), SUM_TOL[torch.float32])
    assert_same(nbops.max_pool2d(x.transpose(2, 3), 2), F.max_pool2d(x.transpose(2, 3), 2))
    assert_same(nbops.conv_transpose2d(x[0], w.transpose(0, 1), stride=2), F.conv_transpose2d(x[0], w.transpose(0, 1), stride=2), SUM_TOL[torch.float32])


def test_empty_denominators_on_gpu_give_nan_like_torch():
    x = randn((4, 3))
    target = torch.full((4,), 2)
    assert torch.isnan(nbops.cross_entropy(x, target, ignore_index=2)) and torch.isnan(F.cross_entropy(x, target, ignore_index=2))
    zero = torch.zeros((4, 3))
    assert torch.isnan(nbops.mse_loss(x, zero, weight=zero)) and torch.isnan(F.mse_loss(x, zero, weight=zero))


# --------------------------------------------------------------------- torch.ops.nbops' CUDA kernels
# Registered for CUDA tensors (nbops/library.py); the simulator has no torch CUDA tensors, so here each
# kernel is called as torch's dispatcher would call it, on host tensors (which the cuda backend copies
# to the simulated GPU), and compared with torch. On a GPU the dispatch itself is tested too.


def _custom_op_cases():
    x = randn((2, 4, 7, 6), seed=1)
    w, b = randn((6, 2, 3, 3), seed=2), randn((6,), seed=3)
    wt = randn((4, 3, 3, 2), seed=4)
    rm, rv = torch.linspace(-1, 1, 4), torch.linspace(0.5, 2, 4)
    scores, target = randn((5, 4), seed=5), torch.tensor([0, 3, 1, 1, 2])
    y = randn((2, 4, 7, 6), seed=6)
    boxes = _boxes(5, 7, 6, 2, torch.float32)
    return [
        ("sigmoid", (x,), lambda: torch.sigmoid(x), "_sigmoid"),
        ("conv2d", (x, w, b, [2, 1], [1, 0], [1, 2], 2), lambda: F.conv2d(x, w, b, (2, 1), (1, 0), (1, 2), 2), "_conv2d_tiled"),
        ("conv_transpose2d", (x, wt, None, [2, 2], [1, 0], [1, 0], 2, [1, 1]),
         lambda: F.conv_transpose2d(x, wt, None, 2, (1, 0), (1, 0), 2, 1), "_conv_transpose2d"),
        ("avg_pool2d", (x, [3, 3], [2, 2], [1, 1], True, False, None), lambda: F.avg_pool2d(x, 3, 2, 1, True, False), "_avg_pool2d"),
        ("max_pool2d_with_indices", (x, [3, 2], [], [1, 0], [1, 1], True),
         lambda: F.max_pool2d(x, (3, 2), None, (1, 0), 1, True, return_indices=True), "_max_pool2d"),
        ("batch_norm_functional", (x, rm, rv, None, b[:4], True, 0.2, 1e-5),
         lambda: (lambda m, v: (F.batch_norm(x, m, v, None, b[:4], True, 0.2, 1e-5), m, v))(rm.clone(), rv.clone()), "_normalize"),
        ("cross_entropy", (scores, target, None, 1, "sum", 0.1),
         lambda: F.cross_entropy(scores, target, ignore_index=1, reduction="sum", label_smoothing=0.1), "_cross_entropy_class"),
        ("mse_loss", (x, y, "none", None), lambda: F.mse_loss(x, y, reduction="none"), "_squared_error"),
        ("roi_pool", (x, boxes, [2, 3], 1.0), None, "_roi_pool"),
    ]


def _check_custom_op(name, args, expected, got):
    """got (the op's results) equal torch's on the host arguments args."""
    if expected is None:  # roi_pool: (output, argmax) as torchvision's op gives them
        out, argmax = torch.ops.torchvision.roi_pool(args[0], args[1], 1.0, *args[2])
        expected = (out, argmax.long())  # (nbops' argmax is int64, torchvision's int32)
    else:
        expected = expected()
    got = got if isinstance(got, tuple) else (got,)
    expected = expected if isinstance(expected, tuple) else (expected,)
    assert len(got) == len(expected), name
    for g, e in zip(got, expected):
        assert_same(g.cpu(), e, SUM_TOL[torch.float32])


@pytest.mark.parametrize("case", _custom_op_cases(), ids=lambda case: case[0])
def test_custom_op_cuda_kernels(case):
    from nbops import library

    name, args, expected, kernel = case
    before = [a.clone() if isinstance(a, torch.Tensor) else a for a in args]
    with nbops.use_backend("cpu"):  # the kernel picks the cuda backend itself
        with ran(kernel):
            got = library.CUDA_KERNELS[name](*args)
    _check_custom_op(name, args, expected, got)
    for a, b in zip(args, before):  # inputs (and batch_norm's running statistics: the op returns new ones) unchanged
        if isinstance(a, torch.Tensor):
            assert torch.equal(a, b)


def test_custom_op_backward_cuda_kernels_refuse():
    from nbops import library

    backward = [name for name in library.CUDA_KERNELS if name.endswith("_backward")]
    assert len(backward) == 9
    for name in backward:
        with pytest.raises(NotImplementedError, match=f"nbops::{name}: gradients are not implemented on the cuda backend"):
            library.CUDA_KERNELS[name](torch.zeros(1))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="torch sees no CUDA GPU (the dispatch to the CUDA kernels needs one)")
def test_custom_ops_on_torch_cuda_tensors():
    for name, args, expected, kernel in _custom_op_cases():
        on_gpu = [a.cuda() if isinstance(a, torch.Tensor) else a for a in args]
        with nbops.use_backend("cpu"), ran(kernel):  # the tensors' device picks the CUDA kernel
            got = getattr(torch.ops.nbops, name)(*on_gpu)
        assert all(g.is_cuda for g in (got if isinstance(got, tuple) else (got,))), name
        _check_custom_op(name, args, expected, got)
    x = randn((2, 3, 5, 5)).cuda().requires_grad_()
    with pytest.raises(NotImplementedError, match="gradients are not implemented on the cuda backend"):
        torch.ops.nbops.sigmoid(x).sum().backward()
