"""Forward plus backward (what a training step runs per layer): nbops through its autograd Functions and
backward kernels, torch through its own, one group per case. The report lists them as `<op>+grad`."""

import os
import sys

import pytest
import torch
import torch.nn.functional as F
from conftest import nbytes, randn

import nbops
import nbops.nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples"))
from train_digits import build_model  # noqa: E402  (the example's network)


def _step(fn, inputs, grad):
    """One forward and backward: the gradients of every input."""
    return lambda: torch.autograd.grad(fn(*inputs), inputs, grad)


def _compare_grads(compare, op, case, torch_fn, nbops_fn, inputs, traffic=0, flops=0):
    inputs = [t.detach().clone().requires_grad_() for t in inputs]
    grad = randn(*torch_fn(*inputs).shape, seed=9)
    compare(f"{op}+grad {case}", case, _step(torch_fn, inputs, grad), _step(nbops_fn, inputs, grad), traffic, flops)


# (N, C_in, C_out, H, W): the 3x3 ResNet layers of the conv benchmarks
CONV_CASES = [(16, 64, 64, 56, 56), (16, 128, 128, 28, 28), (16, 256, 256, 14, 14)]


@pytest.mark.parametrize("n,cin,cout,h,w", CONV_CASES, ids=lambda v: str(v))
def test_conv2d_grad(compare, n, cin, cout, h, w):
    x, weight = randn(n, cin, h, w), randn(cout, cin, 3, 3, seed=1) * 0.05
    flops = 3 * 2 * n * cout * h * w * cin * 9  # forward, input gradient, weight gradient
    _compare_grads(
        compare, "conv2d", f"{n}x{cin}x{h}x{w} {cin}->{cout} 3x3 s1 p1",
        lambda x, w: F.conv2d(x, w, None, 1, 1), lambda x, w: nbops.conv2d(x, w, None, 1, 1), [x, weight], 0, flops,
    )


def test_depthwise_conv2d_grad(compare):
    """A MobileNetV2 depthwise layer (3x3, groups = C): forward, input and weight gradient."""
    x, weight = randn(16, 144, 56, 56), randn(144, 1, 3, 3, seed=1) * 0.05
    _compare_grads(
        compare, "conv2d", "16x144x56x56 depthwise 3x3 s1 p1",
        lambda x, w: F.conv2d(x, w, None, 1, 1, 1, 144), lambda x, w: nbops.conv2d(x, w, None, 1, 1, 1, 144), [x, weight],
        3 * nbytes(x), 3 * 2 * x.numel() * 9,
    )


def _pooling_and_losses():
    """(op, case, torch function, nbops function, inputs, least traffic) for the memory-bound ops."""
    x = randn(32, 64, 112, 112)
    bn_weight, bn_bias = randn(64, seed=1), randn(64, seed=2)
    flat = randn(4_000_000)
    target = randn(4_000_000, seed=1)
    logits = randn(256, 1000)
    labels = torch.randint(0, 1000, (256,), generator=torch.Generator().manual_seed(3))
    return [
        ("max_pool2d", "32x64x112x112 k3 s2 p1", lambda x: F.max_pool2d(x, 3, 2, 1), lambda x: nbops.max_pool2d(x, 3, 2, 1), [x], 3 * nbytes(x)),
        ("avg_pool2d", "32x64x112x112 k2 s2 p0", lambda x: F.avg_pool2d(x, 2, 2), lambda x: nbops.avg_pool2d(x, 2, 2), [x], 3 * nbytes(x)),
        # forward: read twice and write; backward: read the input and the gradient twice, write
        ("batch_norm", "32x64x112x112 train", lambda x, w, b: F.batch_norm(x, None, None, w, b, True),
         lambda x, w, b: nbops.batch_norm(x, None, None, w, b, True), [x, bn_weight, bn_bias], 8 * nbytes(x)),
        ("sigmoid", "4000000", torch.sigmoid, nbops.sigmoid, [flat], 4 * nbytes(flat)),
        ("mse_loss", "4000000 reduction=mean", lambda x: F.mse_loss(x, target), lambda x: nbops.mse_loss(x, target), [flat], 5 * nbytes(flat)),
        ("cross_entropy", "256x1000 reduction=mean", lambda x: F.cross_entropy(x, labels),
         lambda x: nbops.cross_entropy(x, labels), [logits], 3 * nbytes(logits)),
    ]


@pytest.mark.parametrize("index", range(6), ids=["max_pool2d", "avg_pool2d", "batch_norm", "sigmoid", "mse_loss", "cross_entropy"])
def test_memory_bound_grad(compare, index):
    op, case, torch_fn, nbops_fn, inputs, traffic = _pooling_and_losses()[index]
    _compare_grads(compare, op, case, torch_fn, nbops_fn, inputs, traffic)


def test_digits_training_step(compare):
    """One Adam-free step of examples/train_digits.py's network on a batch of 32 8x8 images: forward,
    loss, backward into every parameter (per-call costs dominate at this size)."""
    torch.manual_seed(0)
    reference = build_model(torch.nn)
    ours = build_model(nbops.nn)
    ours.load_state_dict(reference.state_dict())
    x = randn(32, 1, 8, 8)
    y = torch.randint(0, 10, (32,), generator=torch.Generator().manual_seed(1))

    def step(model, loss_fn):
        def run():
            params = list(model.parameters())
            return torch.autograd.grad(loss_fn(model(x), y), params)

        return run

    compare(
        "digits-cnn+grad batch 32", "batch 32 (train_digits.py network)",
        step(reference, torch.nn.CrossEntropyLoss()), step(ours, nbops.nn.CrossEntropyLoss()), 0,
    )
