import contextlib

import llvmlite.binding
import numba
import numba.extending
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given
from hypothesis import strategies as st

import nbops
from nbops.cpu import _depthwise, _weight_tiles, _winograd, _winograd_grad
from nbops.cpu import conv as cpu_conv
from reference import DTYPES, SUM_TOL, assert_same, non_contiguous, randn

# (C_in, C_out, kernel, stride, padding, dilation, groups, bias)
CONV_CASES = [
    (3, 4, 3, 1, 0, 1, 1, True),
    (3, 4, 3, 1, 1, 1, 1, False),
    (4, 6, (3, 2), (2, 1), (1, 0), 1, 1, True),
    (4, 6, 3, 2, 2, 2, 2, True),
    (6, 6, 3, 1, 1, 1, 6, True),  # depthwise
    (4, 8, 1, 1, 0, 1, 4, False),
    (2, 3, 5, 3, 2, (2, 1), 1, True),
    (3, 4, 3, 1, "same", 1, 1, True),
    (3, 4, (4, 2), 1, "same", (1, 3), 1, True),  # odd total padding: one more bottom/right
    (3, 4, 3, 2, "valid", 1, 1, False),
]


@contextlib.contextmanager
def conv_path(path):
    """Run conv2d through one of its kernels whatever the plane size: 'tiles' (the register tiles, both
    dtypes; the weight gradient's tasks lay out their own runs of grad_output), 'winograd' (F(2x2, 3x3)
    for 3x3 kernels at stride 1 and its twins S2 and S2T at stride 2 whatever their channels, batch and
    output size, the register tiles for the others, with grad_output laid out before the weight
    gradient's tiles, as for small layers), 'depthwise' (nbops/cpu/_depthwise.py for depthwise
    convolutions, the register tiles for the others), 'planes' or 'pixels' (the plain loops)."""
    names = [(_winograd, "WINOGRAD"), (_winograd, "WINOGRAD_CHANNELS"), (_winograd, "WINOGRAD_BLOCKS"), (_winograd, "STRIDED_SIZE"),
             (_winograd_grad, "WEIGHT_CHANNELS"), (_winograd_grad, "SPLIT_CHANNELS"), (_winograd_grad, "WEIGHT_BLOCKS")]
    names.append((_depthwise, "DEPTHWISE"))
    saved = cpu_conv.SMALL_PLANE, cpu_conv.TILED, _weight_tiles.BLOCKED_BYTES, [getattr(module, name) for module, name in names]
    cpu_conv.TILED = path in ("tiles", "winograd", "depthwise")
    cpu_conv.SMALL_PLANE = -1 if path == "planes" else 10**12
    _weight_tiles.BLOCKED_BYTES = -1 if path == "tiles" else 10**12
    _winograd.WINOGRAD = path == "winograd"
    for module, name in names[1:-1]:
        setattr(module, name, 0)
    _depthwise.DEPTHWISE = path == "depthwise"
    try:
        yield
    finally:
        cpu_conv.SMALL_PLANE, cpu_conv.TILED, _weight_tiles.BLOCKED_BYTES = saved[:3]
        for (module, name), value in zip(names, saved[3]):
            setattr(module, name, value)


PATHS = ["planes", "pixels", "tiles", "winograd", "depthwise"]


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("batched", [True, False])
def test_conv2d_matches_torch(case, batched, dtype, path):
    cin, cout, k, s, p, d, g, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    shape = (2, cin, 9, 10) if batched else (cin, 9, 10)
    x = randn(shape, dtype, seed=1)
    w = randn((cout, cin // g, kh, kw), dtype, seed=2)
    b = randn((cout,), dtype, seed=3) if has_bias else None
    expected = F.conv2d(x, w, b, s, p, d, g)
    with conv_path(path):
        assert_same(nbops.conv2d(x, w, b, s, p, d, g), expected, SUM_TOL[dtype])
        kw_args = dict(bias=b, stride=s, padding=p, dilation=d, groups=g)
        assert_same(nbops.conv2d(input=x, weight=w, **kw_args), expected, SUM_TOL[dtype])


# (C_in, C_out, kernel, stride, padding, output_padding, groups, dilation, bias)
CONVT_CASES = [
    (3, 4, 3, 1, 0, 0, 1, 1, True),
    (4, 2, 2, 2, 0, 0, 1, 1, False),
    (4, 3, 3, 2, 1, 1, 1, 1, True),
    (4, 6, (3, 2), (2, 3), (1, 0), (1, 2), 2, 1, True),
    (4, 4, 3, 1, 1, 0, 4, 2, True),
    (2, 3, 3, 1, 0, 2, 1, 3, True),  # output_padding < dilation
    (2, 2, 5, 3, 2, 0, 1, (2, 1), False),
]


@pytest.mark.parametrize("path", ["planes", "tiles", "winograd", "depthwise"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CONVT_CASES)
@pytest.mark.parametrize("batched", [True, False])
def test_conv_transpose2d_matches_torch(case, batched, dtype, path):
    cin, cout, k, s, p, op, g, d, has_bias = case
    kh, kw = (k, k) if isinstance(k, int) else k
    shape = (2, cin, 6, 7) if batched else (cin, 6, 7)
    x = randn(shape, dtype, seed=4)
    w = randn((cin, cout // g, kh, kw), dtype, seed=5)
    b = randn((cout,), dtype, seed=6) if has_bias else None
    expected = F.conv_transpose2d(x, w, b, s, p, op, g, d)
    with conv_path(path):
        assert_same(nbops.conv_transpose2d(x, w, b, s, p, op, g, d), expected, SUM_TOL[dtype])
        kw_args = dict(bias=b, stride=s, padding=p, output_padding=op, groups=g, dilation=d)
        assert_same(nbops.conv_transpose2d(input=x, weight=w, **kw_args), expected, SUM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group_out", [3, 4, 5, 8, 9, 12, 13, 16, 17, 21, 24, 28])
def test_tiles_of_every_height(group_out, dtype):
    """The register tiles' last block of each group has 12, 8 or 4 rows (tile12x32, tile8x32, tile4x32)
    after whole blocks of 12: conv2d and conv_transpose2d (with a stride: phases written in place) with
    group_out output channels in each of two groups, and conv2d's input gradient (a convolution whose
    output channels are the input's) with group_out input channels per group, stride 1 and 2."""
    x = randn((2, 6, 9, 8), dtype, seed=group_out)
    w = randn((2 * group_out, 3, 3, 2), dtype, seed=1)
    b = randn((2 * group_out,), dtype, seed=2)
    wt = randn((6, group_out, 3, 3), dtype, seed=3)
    xg = randn((2, 2 * group_out, 9, 8), dtype, seed=4).requires_grad_()
    wg = randn((10, group_out, 3, 3), dtype, seed=5)
    w1 = randn((2 * group_out, 3, 1, 1), dtype, seed=6)
    with conv_path("tiles"):
        # 1x1, no padding: the input in place, its last sample apart (the tiles read past each sample),
        # and the tiles add to the output where it lies: an infinity in the first group's input must not
        # reach the second group's channels through the padding rows of a block (0 * inf)
        assert_same(nbops.conv2d(x, w1, b, 1, 0, 1, 2), F.conv2d(x, w1, b, 1, 0, 1, 2), SUM_TOL[dtype])
        xi = x.clone()
        xi[1, 0, 4, 4] = float("inf")
        assert_same(nbops.conv2d(xi, w1, b, 1, 0, 1, 2), F.conv2d(xi, w1, b, 1, 0, 1, 2), SUM_TOL[dtype])
        for stride in (1, 2):
            assert_same(nbops.conv2d(x, w, b, stride, 1, 1, 2), F.conv2d(x, w, b, stride, 1, 1, 2), SUM_TOL[dtype])
            assert_same(
                nbops.conv_transpose2d(x, wt, b, stride, 1, 0, 2), F.conv_transpose2d(x, wt, b, stride, 1, 0, 2), SUM_TOL[dtype]
            )
            mine = torch.autograd.grad(nbops.conv2d(xg, wg, None, stride, 1, 1, 2).square().sum(), xg)[0]
            expected = torch.autograd.grad(F.conv2d(xg, wg, None, stride, 1, 1, 2).square().sum(), xg)[0]
            assert_same(mine, expected, SUM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("group_out", [3, 10, 12, 20])
@pytest.mark.parametrize("kernel, stride, width", [(1, 1, 8), (3, 1, 17), (3, 1, 29), (3, 2, 33)])
def test_tiles_add_to_the_output_within_it(kernel, stride, width, group_out, dtype):
    """Where the planes are as wide as the output (1x1, no padding) the tiles add to the output where it
    lies: a group's padding rows (0 * inf would be NaN) and a task's last tile stop at the output's
    last channel and position, so an output at the head of a larger buffer leaves the rest alone.
    (3x3 kernels, whose planes are wider, go through a buffer: the same checks, every value as torch.)"""
    x = randn((2, 6, 9, width), dtype, seed=group_out)
    x[1, 5, 8, width - 1] = float("inf")  # the last sample's last channel, read by the last block's padding rows
    w = randn((2 * group_out, 3, kernel, kernel), dtype, seed=1)
    b = randn((2 * group_out,), dtype, seed=2)
    pad = kernel // 2
    expected = F.conv2d(x, w, b, stride, pad, 1, 2)
    plane = expected.shape[2] * expected.shape[3]
    buffer = np.full(expected.numel() + 12 * plane, 7.0, dtype=x.numpy().dtype)  # (room for a block's rows)
    out = buffer[: expected.numel()].reshape(expected.shape)
    padded = (9 + 2 * pad, width + 2 * pad)
    with conv_path("tiles"):
        cpu_conv._conv2d_fast(x.numpy(), w.numpy(), b.numpy(), out, (stride,) * 2, (pad, pad), padded, (1, 1), 2)
    assert_same(torch.from_numpy(out), expected, SUM_TOL[dtype])
    assert (buffer[expected.numel() :] == 7.0).all()


@pytest.mark.parametrize("last", ["half", "wide"])
@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("size", [7, 14, 28])
def test_row_tiles(size, dtype, fused, last, monkeypatch):
    """Output rows 7 or 14 wide (28 with a 3x3 kernel at stride 1) with at least 4L output channels
    per group go through the row tiles (_conv2d_rows): conv2d 3x3 with stride 1 and 2, two groups
    whose last block of 4L channels is part-filled (half a vector of L: row7x2; or 3L: row7x4), the input gradient (turned weights; with a
    stride, transposed-convolution phases 7 wide, of 1 to 4 taps per channel) and conv_transpose2d,
    against torch; and 1x1 convolutions (the input in place but its last sample; with a stride, the
    positions read gathered) and the input gradient of one. On 7-wide planes the tasks pack their
    own blocks (fused), unless FUSED is off; their rows split in two tasks (where _fused_split would
    keep them whole at these sizes). Stride 2 (dilated too) reads planes laid out without a stride
    (row7x4s2). The tasks go block by block where a block's weights outweigh a sample's planes (the
    3x3 kernels here, but at 28 wide), else sample by sample; one sample makes two tasks of rows per
    block."""
    monkeypatch.setattr(nbops.cpu._tile, "FUSED", fused)
    monkeypatch.setattr(nbops.cpu._tile, "_fused_split", lambda blocks, positions, rows: min(rows, 2))
    group_out = (72 if last == "half" else 112) // (1 if dtype == torch.float32 else 2)  # (a last block of L / 2 or 3L channels)
    x = randn((3, 2 * 5, size, size), dtype, seed=size)
    xs2 = randn((2, 2 * 5, 2 * size, 2 * size), dtype, seed=1)
    w = randn((2 * group_out, 5, 3, 3), dtype, seed=2) * 0.3  # (sums of order 1: float32 tolerances)
    b = randn((2 * group_out,), dtype, seed=3)
    w1 = randn((2 * group_out, 5, 1, 1), dtype, seed=4)
    with conv_path("tiles"):
        assert_same(nbops.conv2d(x, w, b, 1, 1, 1, 2), F.conv2d(x, w, b, 1, 1, 1, 2), SUM_TOL[dtype])
        assert_same(nbops.conv2d(x[:1], w, b, 1, 1, 1, 2), F.conv2d(x[:1], w, b, 1, 1, 1, 2), SUM_TOL[dtype])
        assert_same(nbops.conv2d(xs2, w, b, 2, 1, 1, 2), F.conv2d(xs2, w, b, 2, 1, 1, 2), SUM_TOL[dtype])
        assert_same(nbops.conv2d(xs2, w, b, 2, 2, 2, 2), F.conv2d(xs2, w, b, 2, 2, 2, 2), SUM_TOL[dtype])
        assert_same(nbops.conv2d(x, w1, b, 1, 0, 1, 2), F.conv2d(x, w1, b, 1, 0, 1, 2), SUM_TOL[dtype])
        assert_same(nbops.conv2d(xs2, w1, b, 2, 0, 1, 2), F.conv2d(xs2, w1, b, 2, 0, 1, 2), SUM_TOL[dtype])
        xg = randn((3, 2 * group_out, size, size), dtype, seed=8).requires_grad_()
        wg = randn((10, group_out, 1, 1), dtype, seed=9)
        mine = torch.autograd.grad(nbops.conv2d(xg, wg, None, 1, 0, 1, 2).square().sum(), xg)[0]
        expected = torch.autograd.grad(F.conv2d(xg, wg, None, 1, 0, 1, 2).square().sum(), xg)[0]
        assert_same(mine, expected, SUM_TOL[dtype])
        wt = randn((2 * 5, group_out, 3, 3), dtype, seed=5) * 0.3
        assert_same(nbops.conv_transpose2d(x, wt, b, 1, 1, 0, 2), F.conv_transpose2d(x, wt, b, 1, 1, 0, 2), SUM_TOL[dtype])
        for source, stride in ((x, 1), (xs2, 2)):
            xg = randn((2, 2 * group_out) + source.shape[2:], dtype, seed=6).requires_grad_()
            wg = randn((10, group_out, 3, 3), dtype, seed=7) * 0.1
            mine = torch.autograd.grad(nbops.conv2d(xg, wg, None, stride, 1, 1, 2).square().sum(), xg)[0]
            expected = torch.autograd.grad(F.conv2d(xg, wg, None, stride, 1, 1, 2).square().sum(), xg)[0]
            assert_same(mine, expected, SUM_TOL[dtype])


def test_fused_split(monkeypatch):
    """_fused_split, the row tiles' split of the rows for tasks that pack their own blocks: between 1
    and min(rows, 4); whole rows where the blocks already give each thread the same number of tasks
    and the packing is a large share of a task (4 blocks on 2 threads, batch 8 at 7x7), two where 3
    blocks would leave a thread idle half the time."""
    monkeypatch.setattr(nbops.cpu._tile.numba, "get_num_threads", lambda: 2)
    split = nbops.cpu._tile._fused_split
    assert split(4, 8 * 49, 7) == 1 and split(3, 8 * 49, 7) == 2 and split(1, 1, 1) == 1
    for blocks in range(1, 20):
        for rows in range(1, 15):
            for positions in (1, 49 * rows, 10**6):
                assert 1 <= split(blocks, positions, rows) <= min(rows, 4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,cin,cout,size,padding", [
    (2, 5, 7, (9, 10), 1),  # odd output height: the last blocks' second row cut off
    (1, 3, 13, (8, 8), 0),  # two blocks of output channels, the last of one channel
    (3, 4, 30, (7, 11), 2),  # odd width, padding 2 (a transposed convolution's padding 0)
    (2, 300, 20, (5, 6), 1),  # input channels in two runs of PRODUCT_TAPS
    (5, 6, 9, (13, 12), (1, 0)),  # tiles over several panels, the last one part-filled
    (1, 2, 3, (1, 1), 1),  # one output position
])
@pytest.mark.parametrize("fused", [True, False])
def test_winograd(batch, cin, cout, size, padding, dtype, fused, monkeypatch):
    """F(2x2, 3x3) (nbops/cpu/_winograd.py, _winograd_grad.py) whatever the channels and batch, panel
    by panel (`fused`: _winograd_fused, _winograd_weight_fused) and step by step: conv2d, its input and
    weight gradients (the input gradient a correlation with the kernel turned, the weight gradient 16
    products over the blocks and G^T dU G) and conv_transpose2d at stride 1, and at stride 2 conv2d
    (S2), conv_transpose2d and conv2d's input gradient (S2T, padding of either parity), against torch
    and against the plain loops; and into an output that is a strided view."""
    monkeypatch.setattr(_winograd, "FUSED", fused)
    monkeypatch.setattr(_winograd_grad, "FUSED", fused)
    x = randn((batch, cin) + size, dtype, seed=cin)
    w = randn((cout, cin, 3, 3), dtype, seed=cout) / (3 * cin**0.5)  # (sums of order 1: float32 tolerances)
    b = randn((cout,), dtype, seed=3)
    wt = randn((cin, cout, 3, 3), dtype, seed=5) / (3 * cin**0.5)
    tpad = min(padding, 2) if isinstance(padding, int) else padding
    other = (tpad + 1) % 2 if isinstance(tpad, int) else tuple((p + 1) % 2 for p in tpad)  # (the other parity)

    def ops(conv2d, conv_transpose2d):
        return (conv2d(x, w, b, 1, padding), conv_transpose2d(x, wt, b, 1, tpad), conv2d(x, w, b, 2, padding),
                conv_transpose2d(x, wt, b, 2, tpad, 1), conv_transpose2d(x, wt, b, 2, other, 0))

    with conv_path("planes"):
        loops = ops(nbops.conv2d, nbops.conv_transpose2d)
    with conv_path("winograd"):
        mine, expected = ops(nbops.conv2d, nbops.conv_transpose2d), ops(F.conv2d, F.conv_transpose2d)
        for ours, plain, theirs in zip(mine, loops, expected):
            assert_same(ours, theirs, SUM_TOL[dtype])
            assert_same(ours, plain, SUM_TOL[dtype])
        # (out a strided view: the outputs are computed aside and copied in)
        wide = np.full(expected[0].shape[:3] + (expected[0].shape[3] + 1,), 7.0, dtype=x.numpy().dtype)
        pads = (padding,) * 2 if isinstance(padding, int) else padding
        assert _winograd.run_winograd(x.numpy(), w.numpy(), b.numpy(), wide[..., 1:], pads)
        assert_same(torch.from_numpy(wide[..., 1:]), expected[0], SUM_TOL[dtype])
        assert (wide[..., 0] == 7.0).all()
        wide = np.full(expected[2].shape[:3] + (expected[2].shape[3] + 1,), 7.0, dtype=x.numpy().dtype)
        assert _winograd.run_winograd(x.numpy(), w.numpy(), b.numpy(), wide[..., 1:], pads, stride=2)
        assert_same(torch.from_numpy(wide[..., 1:]), expected[2], SUM_TOL[dtype])
        assert (wide[..., 0] == 7.0).all()
        for stride in (1, 2):
            xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
            grads = torch.autograd.grad(nbops.conv2d(xg, wg, b, stride, padding).square().sum(), (xg, wg))
            expected = torch.autograd.grad(F.conv2d(xg, wg, b, stride, padding).square().sum(), (xg, wg))
            for ours, theirs in zip(grads, expected):
                assert_same(ours, theirs, SUM_TOL[dtype])


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("stride", [1, 2])
def test_winograd_infinite_input(stride, fused, monkeypatch):
    """Winograd's transforms take differences of inputs (d0 - d2): an infinite input gives inf - inf =
    NaN there, where the direct sum is infinite. run_winograd says when it stored a NaN, and conv2d,
    its gradients and conv_transpose2d (S2T at stride 2) then take the direct sums: the same
    infinities as torch's, with an infinity in each phase of a block (and positive weights: no
    inf - inf in torch's sums)."""
    monkeypatch.setattr(_winograd, "FUSED", fused)
    monkeypatch.setattr(_winograd_grad, "FUSED", fused)
    x = randn((2, 6, 12, 12), seed=1)
    for n, (h, v) in enumerate([(4, 4), (5, 6), (6, 5), (7, 7)]):
        x[n % 2, n, h, v] = float("inf")
    w = randn((5, 6, 3, 3), seed=2).abs()
    wt = randn((6, 5, 3, 3), seed=3).abs()
    with conv_path("winograd"):
        out = np.empty(F.conv2d(x, w, None, stride, 1).shape, dtype=np.float32)
        assert not _winograd.run_winograd(x.numpy(), w.numpy(), np.zeros(5, np.float32), out, (1, 1), stride=stride)
        assert_same(nbops.conv2d(x, w, None, stride, 1), F.conv2d(x, w, None, stride, 1), SUM_TOL[torch.float32])
        assert_same(nbops.conv_transpose2d(x, wt, None, stride, 1), F.conv_transpose2d(x, wt, None, stride, 1), SUM_TOL[torch.float32])
        xg, wg = x.clone().requires_grad_(), w.clone().requires_grad_()
        grads = torch.autograd.grad(nbops.conv2d(xg, wg, None, stride, 1).sum(), (xg, wg))
        expected = torch.autograd.grad(F.conv2d(xg, wg, None, stride, 1).sum(), (xg, wg))
        for ours, theirs in zip(grads, expected):
            assert_same(ours, theirs, SUM_TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kernel,size,output_padding", [
    ((2, 2), (5, 6), (0, 0)), ((2, 3), (4, 3), (0, 0)), ((3, 3), (3, 4), (1, 2)), ((2, 2), (7, 5), (1, 1)),
])
def test_transposed_kernel_equal_to_stride(kernel, size, output_padding, dtype):
    """A transposed convolution whose kernel is its stride (a decoder's 2x2 upsampling) goes through one
    1x1 convolution of all its phases, interleaved into place (conv.py's _conv_transpose2d_fast), with
    output_padding's extra rows and columns the bias; so does conv2d's input gradient for such a kernel,
    into an input whose size is not a multiple of the stride. Against torch and the plain loops."""
    x = randn((2, 5) + size, dtype, seed=1)
    wt, b = randn((5, 7) + kernel, dtype, seed=2), randn((7,), dtype, seed=3)
    expected = F.conv_transpose2d(x, wt, b, kernel, 0, output_padding)
    with conv_path("planes"):
        loops = nbops.conv_transpose2d(x, wt, b, kernel, 0, output_padding)
    mine = nbops.conv_transpose2d(x, wt, b, kernel, 0, output_padding)
    assert_same(mine, expected, SUM_TOL[dtype])
    assert_same(mine, loops, SUM_TOL[dtype])
    xg = randn((2, 7, size[0] * kernel[0] + 1, size[1] * kernel[1] + 1), dtype, seed=4).requires_grad_()
    w = randn((5, 7) + kernel, dtype, seed=5)
    mine = torch.autograd.grad(nbops.conv2d(xg, w, None, kernel).square().sum(), xg)[0]
    expected = torch.autograd.grad(F.conv2d(xg, w, None, kernel).square().sum(), xg)[0]
    assert_same(mine, expected, SUM_TOL[dtype])


@pytest.mark.parametrize("width", [1, 2, 3])
def test_narrow_inputs_with_wide_dilated_kernels(width):
    # taps whose every output column falls outside the row (found by hypothesis: once read out of bounds)
    x = randn((1, 2, 2, width), torch.float64)
    for k, d, p in [(4, 2, 2), (3, 3, 1), (5, 1, 2), (2, 4, 1)]:
        wt = randn((2, 3, 1, k), torch.float64, seed=k)
        args = dict(stride=1, padding=(0, p), dilation=(1, d))
        assert_same(nbops.conv_transpose2d(x, wt, **args), F.conv_transpose2d(x, wt, **args))
        w = randn((3, 2, 1, k), torch.float64, seed=k)
        try:
            expected = F.conv2d(x, w, **args)
        except RuntimeError:
            continue
        assert_same(nbops.conv2d(x, w, **args), expected)


def test_conv2d_without_input_channels_is_bias():
    # torch 2.14 returns zero *output* channels here, which contradicts its own formula; nbops follows
    # the formula: an empty sum, so every output pixel is the bias.
    x = torch.zeros(2, 0, 5, 5)
    w = torch.zeros(4, 0, 3, 3)
    b = randn((4,))
    for path in PATHS:
        with conv_path(path):
            out = nbops.conv2d(x, w, b, padding=1)
        assert out.shape == (2, 4, 5, 5)
        assert torch.equal(out, b.view(1, 4, 1, 1).expand(2, 4, 5, 5))


def test_conv_layouts_and_numpy():
    x = randn((2, 4, 9, 9), torch.float32)
    w = randn((6, 4, 3, 3), torch.float32, seed=1)
    wt = randn((4, 5, 3, 3), torch.float32, seed=2)
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last)):
        assert_same(nbops.conv2d(variant, non_contiguous(w), None, 2, 1), F.conv2d(variant, w, None, 2, 1), SUM_TOL[torch.float32])
        assert_same(
            nbops.conv_transpose2d(variant, wt.contiguous(memory_format=torch.channels_last), stride=2),
            F.conv_transpose2d(variant, wt, stride=2),
            SUM_TOL[torch.float32],
        )
    out = nbops.conv2d(x.numpy(), w.numpy(), padding=1)
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, F.conv2d(x, w, padding=1).numpy(), rtol=2e-4, atol=2e-4)
    out = nbops.conv_transpose2d(x.numpy(), wt.numpy())
    assert isinstance(out, np.ndarray)
    np.testing.assert_allclose(out, F.conv_transpose2d(x, wt).numpy(), rtol=2e-4, atol=2e-4)


def test_conv_empty_batch_and_special_values():
    w = randn((3, 2, 3, 3))
    x = torch.zeros(0, 2, 5, 5)
    assert_same(nbops.conv2d(x, w), F.conv2d(x, w))
    assert_same(nbops.conv_transpose2d(torch.zeros(0, 3, 5, 5), w), F.conv_transpose2d(torch.zeros(0, 3, 5, 5), w))
    x = randn((1, 2, 6, 6))
    x[0, 0, 2, 2] = float("nan")
    x[0, 1, 4, 4] = float("inf")
    assert_same(nbops.conv2d(x, w, padding=1), F.conv2d(x, w, padding=1), SUM_TOL[torch.float32])


def test_conv_does_not_modify_inputs():
    x, w, b = randn((1, 2, 5, 5)), randn((3, 2, 3, 3), seed=1), randn((3,), seed=2)
    copies = [t.clone() for t in (x, w, b)]
    nbops.conv2d(x, w, b, padding=1)
    nbops.conv_transpose2d(x, randn((2, 3, 3, 3)), b)
    assert all(torch.equal(a, c) for a, c in zip((x, w, b), copies))


# the plain loops in float64, the register tiles and F(2x2, 3x3) in both dtypes
PROPERTY_PATHS = [
    ("planes", torch.float64), ("pixels", torch.float64), ("tiles", torch.float32), ("tiles", torch.float64),
    ("winograd", torch.float32), ("winograd", torch.float64), ("depthwise", torch.float32), ("depthwise", torch.float64),
]


@pytest.mark.parametrize("path,dtype", PROPERTY_PATHS)
@given(
    n=st.integers(0, 2),
    groups=st.integers(1, 3),
    cin_per=st.integers(1, 3),
    cout_per=st.integers(1, 3),
    h=st.integers(1, 10),
    w=st.integers(1, 10),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 3),
    pw=st.integers(0, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    bias=st.booleans(),
    same=st.booleans(),
)
def test_conv2d_property(path, dtype, n, groups, cin_per, cout_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw, bias, same):
    x = randn((n, groups * cin_per, h, w), dtype, seed=h + w)
    weight = randn((groups * cout_per, cin_per, kh, kw), dtype, seed=kh)
    b = randn((groups * cout_per,), dtype, seed=3) if bias else None
    padding = "same" if same else (ph, pw)
    stride = (1, 1) if same else (sh, sw)
    args = (b, stride, padding, (dh, dw), groups)
    try:  # validity judged on a non-empty batch: torch skips some checks when N == 0
        F.conv2d(randn((1,) + x.shape[1:], dtype), weight, *args)
        expected = F.conv2d(x, weight, *args)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops.conv2d(x, weight, *args)
        return
    with conv_path(path):
        assert_same(nbops.conv2d(x, weight, *args), expected, SUM_TOL[dtype])


@pytest.mark.parametrize("path,dtype", [p for p in PROPERTY_PATHS if p[0] != "pixels"])
@given(
    n=st.integers(0, 2),
    groups=st.integers(1, 3),
    cin_per=st.integers(1, 3),
    cout_per=st.integers(1, 3),
    h=st.integers(1, 7),
    w=st.integers(1, 7),
    kh=st.integers(1, 4),
    kw=st.integers(1, 4),
    sh=st.integers(1, 3),
    sw=st.integers(1, 3),
    ph=st.integers(0, 3),
    pw=st.integers(0, 3),
    dh=st.integers(1, 3),
    dw=st.integers(1, 3),
    oph=st.integers(0, 2),
    opw=st.integers(0, 2),
    bias=st.booleans(),
)
def test_conv_transpose2d_property(path, dtype, n, groups, cin_per, cout_per, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oph, opw, bias):
    x = randn((n, groups * cin_per, h, w), dtype, seed=h + w)
    weight = randn((groups * cin_per, cout_per, kh, kw), dtype, seed=kw)
    b = randn((groups * cout_per,), dtype, seed=3) if bias else None
    args = (b, (sh, sw), (ph, pw), (oph, opw), groups, (dh, dw))
    try:  # validity judged on a non-empty batch: torch skips some checks when N == 0
        F.conv_transpose2d(randn((1,) + x.shape[1:], dtype), weight, *args)
        expected = F.conv_transpose2d(x, weight, *args)
    except RuntimeError:
        with pytest.raises(ValueError):
            nbops.conv_transpose2d(x, weight, *args)
        return
    if expected.numel() == 0 and min(expected.shape[2:]) <= 0:
        return
    with conv_path(path):
        assert_same(nbops.conv_transpose2d(x, weight, *args), expected, SUM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("channels,size,kernel,stride,padding,dilation", [
    (16, (9, 10), 3, 1, 1, 1),  # one whole block of L channels (float32; two of float64)
    (21, (12, 7), 3, 2, 1, 1),  # a part-filled last block, a stride
    (5, (8, 9), 5, 1, 2, 1),  # fewer channels than lanes
    (18, (14, 14), 7, 1, 3, 1),  # ConvNeXt's 7x7
    (17, (11, 13), (3, 2), (2, 3), (0, 1), (2, 1)),  # every parameter unequal, no padding in height
    (33, (6, 6), 3, 1, "same", 2),
    (9, (7, 10), (2, 4), 1, "same", 1),  # an odd total padding: one more at the bottom and right
    (24, (9, 9), 3, 3, 0, 1),  # a stride larger than the overlap: phases without taps
])
def test_depthwise_matches_torch_and_loops(channels, size, kernel, stride, padding, dilation, dtype):
    """Depthwise conv2d (nbops/cpu/_depthwise.py), its input, weight and bias gradients and
    conv_transpose2d with groups = channels, against torch and against the plain loops ('planes'),
    with a non-contiguous input."""
    kh, kw = (kernel, kernel) if isinstance(kernel, int) else kernel
    x = non_contiguous(randn((3, channels) + size, dtype, seed=1)).requires_grad_(True)
    w = randn((channels, 1, kh, kw), dtype, seed=2).requires_grad_(True)
    b = randn((channels,), dtype, seed=3).requires_grad_(True)
    expected = F.conv2d(x, w, b, stride, padding, dilation, channels)
    gy = randn(expected.shape, dtype, seed=4)
    expected_grads = torch.autograd.grad(expected, (x, w, b), gy)
    results = {}
    for path in ("depthwise", "planes"):
        with conv_path(path):
            out = nbops.conv2d(x, w, b, stride, padding, dilation, channels)
            results[path] = (out,) + torch.autograd.grad(out, (x, w, b), gy)
    for ours, theirs in zip(results["depthwise"], (expected,) + expected_grads):
        assert_same(ours, theirs, SUM_TOL[dtype])
    for ours, loops in zip(results["depthwise"], results["planes"]):
        assert_same(ours, loops, SUM_TOL[dtype])
    if isinstance(padding, str):
        return
    xt = randn((2, channels) + size, dtype, seed=5).requires_grad_(True)
    wt = randn((channels, 1, kh, kw), dtype, seed=6).requires_grad_(True)
    first = lambda value: value if isinstance(value, int) else value[0]  # noqa: E731
    output_padding = (1 if max(first(stride), first(dilation)) > 1 else 0, 0)  # (one more row where allowed)
    expected = F.conv_transpose2d(xt, wt, b, stride, padding, output_padding, channels, dilation)
    gy = randn(expected.shape, dtype, seed=7)
    expected_grads = torch.autograd.grad(expected, (xt, wt), gy)
    with conv_path("depthwise"):
        out = nbops.conv_transpose2d(xt, wt, b, stride, padding, output_padding, channels, dilation)
        grads = torch.autograd.grad(out, (xt, wt), gy)
    for ours, theirs in zip((out,) + grads, (expected,) + expected_grads):
        assert_same(ours, theirs, SUM_TOL[dtype])


@pytest.mark.parametrize("dtype", DTYPES)
@given(
    n=st.integers(0, 2), channels=st.integers(2, 20), h=st.integers(1, 12), w=st.integers(1, 12),
    kh=st.integers(1, 5), kw=st.integers(1, 5), sh=st.integers(1, 3), sw=st.integers(1, 3),
    ph=st.integers(0, 3), pw=st.integers(0, 3), dh=st.integers(1, 3), dw=st.integers(1, 3), bias=st.booleans(),
)
def test_depthwise_property(dtype, n, channels, h, w, kh, kw, sh, sw, ph, pw, dh, dw, bias):
    """Depthwise conv2d and its gradients (nbops/cpu/_depthwise.py) against torch for any sizes."""
    x = randn((n, channels, h, w), dtype, seed=h + w).requires_grad_(True)
    weight = randn((channels, 1, kh, kw), dtype, seed=kh).requires_grad_(True)
    b = randn((channels,), dtype, seed=3).requires_grad_(True) if bias else None
    args = ((sh, sw), (ph, pw), (dh, dw), channels)
    try:  # validity judged on a non-empty batch: torch skips some checks when N == 0
        F.conv2d(randn((1,) + x.shape[1:], dtype), weight, b, *args)
        expected = F.conv2d(x, weight, b, *args)
    except RuntimeError:
        return
    inputs = [t for t in (x, weight, b) if t is not None]
    gy = randn(expected.shape, dtype, seed=4)
    with conv_path("depthwise"):
        out = nbops.conv2d(x, weight, b, *args)
        assert_same(out, expected, SUM_TOL[dtype])
        if expected.numel():
            for ours, theirs in zip(torch.autograd.grad(out, inputs, gy), torch.autograd.grad(expected, inputs, gy)):
                assert_same(ours, theirs, SUM_TOL[dtype])


def _x(shape=(2, 3, 5, 5), dtype=torch.float32):
    return torch.zeros(shape, dtype=dtype)


BAD_CONV = [
    (lambda: nbops.conv2d(_x(), _x((4, 3, 3, 3)), stride=2, padding="same"), ValueError, "same"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 3, 3)), padding="full"), ValueError, "padding"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), groups=2), ValueError, "groups"),
    (lambda: nbops.conv2d(_x((2, 4, 5, 5)), _x((3, 2, 2, 2)), groups=2), ValueError, "groups"),
    (lambda: nbops.conv2d(_x(), _x((4, 2, 2, 2))), ValueError, "channels"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 6, 6))), ValueError, "larger than the padded input"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 3, 3)), dilation=3), ValueError, "larger than the padded input"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), padding=-1), ValueError, "padding"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), stride=0), ValueError, "stride"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), dilation=0), ValueError, "dilation"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), groups=0), ValueError, "groups"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), groups=1.0), TypeError, "groups"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), stride=(1, 1, 1)), ValueError, "stride"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), bias=_x((3,))), ValueError, "bias"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2), torch.float64)), TypeError, "weight"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), bias=_x((4,), torch.float64)), TypeError, "bias"),
    (lambda: nbops.conv2d(_x(), _x((0, 3, 2, 2))), ValueError, "out_channels"),
    (lambda: nbops.conv2d(_x((5, 5)), _x((4, 3, 2, 2))), ValueError, "input"),
    (lambda: nbops.conv2d(_x((1, 1, 3, 5, 5)), _x((4, 3, 2, 2))), ValueError, "input"),
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2)),), ValueError, "weight"),
    (lambda: nbops.conv2d(_x(dtype=torch.int64), _x((4, 3, 2, 2), torch.int64)), TypeError, "float32 or float64"),
    (lambda: nbops.conv2d(_x(), torch.zeros(()).expand(4, 3, 2**40, 2)), ValueError, "larger"),  # a huge kernel, no memory
    (lambda: nbops.conv2d(_x(), _x((4, 3, 2, 2)), padding=2**40), ValueError, "padding"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), stride=2, output_padding=2), ValueError, "output_padding"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), output_padding=-1), ValueError, "output_padding"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), padding="same"), TypeError, "padding"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), padding=5), ValueError, "output size"),
    (lambda: nbops.conv_transpose2d(_x((2, 3, 5, 5)), _x((3, 3, 3, 3)), groups=2), ValueError, "groups"),
    (lambda: nbops.conv_transpose2d(_x(), _x((4, 3, 3, 3))), ValueError, "channels"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), bias=_x((3,))), ValueError, "bias"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), stride=0), ValueError, "stride"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3)), dilation=-1), ValueError, "dilation"),
    (lambda: nbops.conv_transpose2d(_x(), _x((3, 4, 3, 3), torch.float64)), TypeError, "weight"),
    (lambda: nbops.conv_transpose2d(_x((2, 3, 0, 5)), _x((3, 4, 3, 3))), ValueError, "height and width"),
]


@pytest.mark.parametrize("call,exc,words", BAD_CONV)
def test_conv_bad_arguments(call, exc, words):
    with pytest.raises(exc, match=words):
        call()


def _inner_loop(asm):
    """The innermost loop of a function's assembly that holds fused multiply-adds on zmm registers: the
    lines from a label to the jump back to it (LLVM's x86 assembly, AT&T syntax)."""
    lines = asm.splitlines()
    loops = []
    for i, line in enumerate(lines):
        label = line.strip()[:-1] if line.strip().startswith(".LBB") and line.strip().endswith(":") else None
        for j in range(i + 1, len(lines)) if label else ():
            if lines[j].strip().startswith("j") and lines[j].split()[-1] == label:
                body = lines[i : j + 1]
                if any("vfmadd" in x and "zmm" in x for x in body):
                    loops.append(body)
                break
    return min(loops, key=len) if loops else []


def _tile_asm(fn, *args):
    """The assembly of fn(*args) compiled for the given Numba types (not run)."""
    compiled = numba.njit(numba.types.void(*args))(fn)
    return compiled.inspect_asm(compiled.signatures[0])


def _call_tile(src, offsets, weights, out, bias):
    nbops.cpu._tile.tile12x32(src, 0, offsets, offsets.size, weights, 0, out, 0, 32, 12, 32, bias, 0, 1)


def _call_row(src, offsets, weights, out, bias):
    nbops.cpu._tile.row7x4(src, 0, offsets, offsets.size, weights, 0, out, 0, bias, 0, 1)


def _call_taps(grads, xs, xstarts, out):
    _weight_tiles.taps12x32(grads, 0, 100, 32, xs, xstarts, 100, 2, 3, 7, 9, out, 0, 32)


@pytest.mark.skipif(not llvmlite.binding.get_host_cpu_features().get("avx512f", False), reason="the tiles' registers are AVX-512's")
@pytest.mark.parametrize("dtype", [numba.types.float32, numba.types.float64])
def test_tiles_stay_in_registers(dtype):
    """What the register tiles are for, in their assembly: each one's innermost loop issues its fused
    multiply-adds on zmm registers (24 for the 12 x 2L tiles, tile12x32 and the weight gradient's
    taps12x32, 28 for the row tile row7x4) and keeps its sums in registers: the 12 x 2L tiles move no
    zmm register to or from the stack. The row tile's 28 sums, 4 weight vectors and a broadcast input
    need 33 registers of AVX-512's 32, and LLVM keeps one sum on the stack (one load and one store per
    step of 28 multiply-adds: in one core's L1, 175 GFLOP/s against 183-189 for a 6-position tile
    without it); no more than that one. A tile of 16 x 2L, 32 sums, spills more: the check sees it."""
    arr, index = numba.types.Array(dtype, 1, "C"), numba.types.Array(numba.types.int64, 1, "C")
    for fn, args, fmas, stack in ((_call_tile, (arr, index, arr, arr, arr), 24, 0), (_call_row, (arr, index, arr, arr, arr), 28, 2), (_call_taps, (arr, arr, index, arr), 24, 0)):
        loop = _inner_loop(_tile_asm(fn, *args))
        assert sum("vfmadd" in line and "zmm" in line for line in loop) == fmas, fn.__name__
        assert len([line for line in loop if "zmm" in line and "rsp" in line]) <= stack, fn.__name__

    @numba.extending.intrinsic
    def tile16x32(typingctx, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first):
        return nbops.cpu._tile._tile_typing(16, src, start, offsets, ntaps, weights, wstart, out, ostart, ostride, valid_rows, valid_columns, bias, bstart, first)

    def call_16(src, offsets, weights, out, bias):
        tile16x32(src, 0, offsets, offsets.size, weights, 0, out, 0, 32, 16, 32, bias, 0, 1)

    loop = _inner_loop(_tile_asm(call_16, arr, index, arr, arr, arr))
    assert sum("vfmadd" in line and "zmm" in line for line in loop) == 32
    assert len([line for line in loop if "zmm" in line and "rsp" in line]) > 2
