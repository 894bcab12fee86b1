import pytest
import torch.nn.functional as F
from conftest import nbytes, randn

import nbops

# (N, C_in, C_out, H, W, k, stride, padding): ResNet layers (N=16), and LeNet's first layer
CONV_CASES = [
    (16, 64, 64, 56, 56, 3, 1, 1),
    (16, 128, 128, 28, 28, 3, 1, 1),
    (16, 256, 256, 14, 14, 3, 1, 1),
    (16, 256, 64, 56, 56, 1, 1, 0),
    (16, 64, 128, 56, 56, 3, 2, 1),
    (16, 3, 64, 224, 224, 7, 2, 3),
    (64, 1, 6, 28, 28, 5, 1, 0),
]
# (N, C, H, W, k, stride): depthwise layers (groups = C) of MobileNetV2 (3x3), EfficientNet (5x5) and
# ConvNeXt (7x7)
DEPTHWISE_CASES = [
    (16, 144, 56, 56, 3, 1),
    (16, 576, 14, 14, 3, 2),
    (16, 672, 14, 14, 5, 2),
    (16, 384, 14, 14, 7, 1),
]
# (N, C_in, C_out, H, W, k, stride): decoder upsampling layers
CONVT_CASES = [
    (16, 128, 64, 28, 28, 2, 2),
    (16, 64, 64, 28, 28, 3, 2),
]


@pytest.mark.parametrize("n,cin,cout,h,w,k,s,p", CONV_CASES, ids=lambda v: str(v))
def test_conv2d(compare, n, cin, cout, h, w, k, s, p):
    x = randn(n, cin, h, w)
    weight = randn(cout, cin, k, k, seed=1) * 0.05
    out = F.conv2d(x, weight, None, s, p)
    flops = 2 * out.numel() * cin * k * k
    case = f"{n}x{cin}x{h}x{w} {cin}->{cout} {k}x{k} s{s} p{p}"
    compare(
        f"conv2d {case}", case, lambda: F.conv2d(x, weight, None, s, p), lambda: nbops.conv2d(x, weight, None, s, p),
        nbytes(x, weight, out), flops,
    )


@pytest.mark.parametrize("n,c,h,w,k,s", DEPTHWISE_CASES, ids=lambda v: str(v))
def test_depthwise_conv2d(compare, n, c, h, w, k, s):
    x = randn(n, c, h, w)
    weight = randn(c, 1, k, k, seed=1) * 0.05
    out = F.conv2d(x, weight, None, s, k // 2, 1, c)
    case = f"{n}x{c}x{h}x{w} depthwise {k}x{k} s{s} p{k // 2}"
    compare(
        f"conv2d {case}", case, lambda: F.conv2d(x, weight, None, s, k // 2, 1, c),
        lambda: nbops.conv2d(x, weight, None, s, k // 2, 1, c), nbytes(x, weight, out), 2 * out.numel() * k * k,
    )


@pytest.mark.parametrize("n,cin,cout,h,w,k,s", CONVT_CASES, ids=lambda v: str(v))
def test_conv_transpose2d(compare, n, cin, cout, h, w, k, s):
    x = randn(n, cin, h, w)
    weight = randn(cin, cout, k, k, seed=1) * 0.05
    out = F.conv_transpose2d(x, weight, stride=s)
    flops = 2 * x.numel() * cout * k * k
    case = f"{n}x{cin}x{h}x{w} {cin}->{cout} {k}x{k} s{s}"
    compare(
        f"conv_transpose2d {case}", case, lambda: F.conv_transpose2d(x, weight, stride=s),
        lambda: nbops.conv_transpose2d(x, weight, stride=s), nbytes(x, weight, out), flops,
    )
