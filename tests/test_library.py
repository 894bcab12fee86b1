"""nbops' torch custom operators (nbops/library.py): torch.library.opcheck on every registered op and
its backward op, values and gradients against torch's own ops, and a whole-graph torch.compile."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.library import opcheck

import nbops.library  # noqa: F401  (registers torch.ops.nbops)
from reference import SUM_TOL, assert_same, randn

DTYPES = [torch.float32, torch.float64]


def _leaf(shape, dtype, seed, grad=True):
    return randn(shape, dtype, seed=seed).requires_grad_(grad)


# (input shape, weight shape, bias, stride, padding, dilation, groups): sizes as ints or pairs
CONV_SAMPLES = [
    ((2, 3, 9, 10), (4, 3, 3, 3), True, 1, 1, 1, 1),
    ((2, 4, 11, 8), (6, 2, 3, 2), False, [2, 1], [1, 0], [1, 2], 2),
    ((3, 9, 7), (5, 3, 1, 1), True, 2, 0, 1, 1),  # unbatched
    ((1, 2, 12, 12), (3, 2, 5, 5), True, 3, 2, 2, 1),
]

# (input shape, kernel, stride, padding, ceil_mode): stride [] means the kernel size
POOL_SAMPLES = [
    ((2, 3, 9, 10), 2, [], 0, False),
    ((2, 3, 11, 8), [3, 2], [2, 1], [1, 0], True),
    ((3, 7, 7), 3, 2, 1, False),  # unbatched
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", CONV_SAMPLES)
def test_conv2d_op(sample, dtype):
    shape, wshape, bias, stride, padding, dilation, groups = sample
    x, w = _leaf(shape, dtype, 1), _leaf(wshape, dtype, 2)
    b = _leaf((wshape[0],), dtype, 3) if bias else None
    args = (x, w, b, stride, padding, dilation, groups)
    opcheck(torch.ops.nbops.conv2d.default, args)
    _same_values_and_gradients(torch.ops.nbops.conv2d, F.conv2d, args, dtype)
    gy = randn(tuple(F.conv2d(*args).shape), dtype, seed=4)
    mask = [True, True, bias]
    opcheck(torch.ops.nbops.conv2d_backward.default, (gy, x.detach(), w.detach(), stride, padding, dilation, groups, mask))


# (input shape, weight shape, bias, stride, padding, output_padding, groups, dilation)
CONVT_SAMPLES = [
    ((2, 3, 6, 7), (3, 4, 3, 3), True, 2, 1, 1, 1, 1),
    ((2, 4, 5, 5), (4, 3, 2, 3), False, [1, 2], [0, 1], [0, 1], 2, [2, 1]),
    ((4, 5, 6), (4, 2, 3, 3), True, 1, 0, 0, 1, 1),  # unbatched
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", CONVT_SAMPLES)
def test_conv_transpose2d_op(sample, dtype):
    shape, wshape, bias, stride, padding, output_padding, groups, dilation = sample
    x, w = _leaf(shape, dtype, 1), _leaf(wshape, dtype, 2)
    b = _leaf((wshape[1] * groups,), dtype, 3) if bias else None
    args = (x, w, b, stride, padding, output_padding, groups, dilation)
    opcheck(torch.ops.nbops.conv_transpose2d.default, args)
    _same_values_and_gradients(torch.ops.nbops.conv_transpose2d, F.conv_transpose2d, args, dtype)
    gy = randn(tuple(F.conv_transpose2d(*args).shape), dtype, seed=4)
    opcheck(
        torch.ops.nbops.conv_transpose2d_backward.default,
        (gy, x.detach(), w.detach(), stride, padding, dilation, groups, [True, True, bias]),
    )


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("sample", POOL_SAMPLES)
def test_pooling_ops(sample, dtype):
    shape, kernel, stride, padding, ceil_mode = sample
    x = _leaf(shape, dtype, 1)
    for count_include_pad, divisor in ((True, None), (False, None), (True, 3)):
        args = (x, kernel, stride, padding, ceil_mode, count_include_pad, divisor)
        opcheck(torch.ops.nbops.avg_pool2d.default, args)
        _same_values_and_gradients(torch.ops.nbops.avg_pool2d, _torch_pool(F.avg_pool2d), args, dtype)
    args = (x, kernel, stride, padding, 1, ceil_mode)
    opcheck(torch.ops.nbops.max_pool2d_with_indices.default, args)
    out, indices = torch.ops.nbops.max_pool2d_with_indices(*args)
    expected, expected_indices = F.max_pool2d(x, kernel, stride or None, padding, 1, ceil_mode, True)
    assert_same(out.detach(), expected.detach())
    assert torch.equal(indices, expected_indices) and not indices.requires_grad
    _same_values_and_gradients(torch.ops.nbops.max_pool2d, _torch_pool(F.max_pool2d), args, dtype)
    grad = randn(tuple(out.shape), dtype, seed=5)
    opcheck(torch.ops.nbops.max_pool2d_backward.default, (grad, x.detach(), indices, kernel, stride, padding, 1))
    opcheck(torch.ops.nbops.avg_pool2d_backward.default, (grad, x.detach(), kernel, stride, padding, ceil_mode, True, None))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (7,), ()])
def test_sigmoid_op(shape, dtype):
    x = _leaf(shape, dtype, 1)
    opcheck(torch.ops.nbops.sigmoid.default, (x,))
    _same_values_and_gradients(torch.ops.nbops.sigmoid, torch.sigmoid, (x,), dtype)
    out = torch.sigmoid(x).detach()
    opcheck(torch.ops.nbops.sigmoid_backward.default, (randn(shape, dtype, seed=2), out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(4, 3, 5, 6), (8, 5), (3, 4, 7)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("affine,running", [(True, True), (False, True), (True, False)])
def test_batch_norm_ops(shape, dtype, training, affine, running):
    """batch_norm_functional (output and updated running statistics, no argument changed) passes
    opcheck; batch_norm (which copies the statistics into the buffers) gives torch's output, running
    statistics and gradients."""
    if not training and not running:
        return  # (evaluation needs running statistics, in torch too)
    channels = shape[1]
    x = _leaf(shape, dtype, 1)
    w, b = (_leaf((channels,), dtype, 2), _leaf((channels,), dtype, 3)) if affine else (None, None)
    stats = (randn((channels,), dtype, seed=4), randn((channels,), dtype, seed=5).abs() + 0.5) if running else (None, None)
    args = (x, *stats, w, b, training, 0.1, 1e-5)
    opcheck(torch.ops.nbops.batch_norm_functional.default, args)
    ours = [None if s is None else s.clone() for s in stats]
    theirs = [None if s is None else s.clone() for s in stats]
    out = torch.ops.nbops.batch_norm(x, *ours, w, b, training, 0.1, 1e-5)
    expected = F.batch_norm(x, *theirs, w, b, training, 0.1, 1e-5)
    assert_same(out.detach(), expected.detach(), SUM_TOL[dtype])
    for mine, reference in zip(ours, theirs):
        if mine is not None:
            assert_same(mine, reference, SUM_TOL[dtype])
    tensors = [t for t in (x, w, b) if t is not None]
    grad = randn(shape, dtype, seed=9)
    for mine, reference in zip(torch.autograd.grad(out, tensors, grad), torch.autograd.grad(expected, tensors, grad)):
        assert_same(mine, reference, SUM_TOL[dtype])
    mask = [True, affine, affine]
    weight = None if w is None else w.detach()
    opcheck(torch.ops.nbops.batch_norm_backward.default, (grad, x.detach(), weight, *stats, training, 1e-5, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", ["indices", "indices weighted", "probabilities", "probabilities weighted", "unbatched"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_op(case, reduction, dtype):
    x = _leaf((5,) if case == "unbatched" else (4, 5, 3), dtype, 1)
    if "probabilities" in case:
        target = torch.softmax(randn((4, 5, 3), dtype, seed=2), 1).requires_grad_()
    else:
        target = torch.randint(0, 5, () if case == "unbatched" else (4, 3), generator=torch.Generator().manual_seed(2))
    weight = torch.rand(5, dtype=dtype, generator=torch.Generator().manual_seed(3)) if "weighted" in case else None
    ignore_index = 1 if case == "indices weighted" else -100
    args = (x, target, weight, ignore_index, reduction, 0.1)
    opcheck(torch.ops.nbops.cross_entropy.default, args)

    def theirs(x, target, weight, ignore_index, reduction, smoothing):
        return F.cross_entropy(x, target, weight, ignore_index=ignore_index, reduction=reduction, label_smoothing=smoothing)

    _same_values_and_gradients(torch.ops.nbops.cross_entropy, theirs, args, dtype)
    grad = randn(tuple(theirs(*args).shape), dtype, seed=6)
    mask = [True, target.is_floating_point()]
    opcheck(torch.ops.nbops.cross_entropy_backward.default, (grad, x.detach(), target.detach(), weight, ignore_index, reduction, 0.1, mask))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("weighted", [False, True])
def test_mse_loss_op(reduction, weighted, dtype):
    x, y = _leaf((3, 4), dtype, 1), _leaf((3, 4), dtype, 2)
    w = _leaf((3, 4), dtype, 3).abs().detach().requires_grad_() if weighted else None
    args = (x, y, reduction, w)
    opcheck(torch.ops.nbops.mse_loss.default, args)
    _same_values_and_gradients(
        torch.ops.nbops.mse_loss, lambda x, y, reduction, w: F.mse_loss(x, y, reduction=reduction, weight=w), args, dtype
    )
    grad = randn(tuple(F.mse_loss(x, y, reduction=reduction).shape), dtype, seed=6)
    detached = None if w is None else w.detach()
    opcheck(torch.ops.nbops.mse_loss_backward.default, (grad, x.detach(), y.detach(), reduction, detached, [True, True, weighted]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_roi_pool_op(dtype):
    from torchvision.ops import roi_pool as tv_roi_pool

    x = _leaf((2, 3, 10, 12), dtype, 1)
    boxes = torch.tensor([[0, 1, 1, 8, 6], [1, 0, 2, 11, 9], [0, 3, 3, 3, 3], [1, 5, 0, 9, 4]], dtype=dtype)
    for output_size, scale in (([2, 3], 1.0), (2, 0.5)):
        opcheck(torch.ops.nbops.roi_pool.default, (x, boxes, output_size, scale))
        out, argmax = torch.ops.nbops.roi_pool(x, boxes, output_size, scale)
        expected = tv_roi_pool(x, boxes, output_size, scale)
        assert_same(out.detach(), expected.detach(), {"rtol": 0, "atol": 0})
        assert argmax.dtype == torch.int64 and not argmax.requires_grad
        grad = randn(tuple(out.shape), dtype, seed=7)
        assert_same(torch.autograd.grad(out, x, grad)[0], torch.autograd.grad(expected, x, grad)[0], SUM_TOL[dtype])
        opcheck(torch.ops.nbops.roi_pool_backward.default, (grad, argmax, boxes, list(x.shape)))


def _torch_pool(fn):
    """torch's pooling function with the ops' empty stride meaning the kernel size."""
    return lambda x, kernel, stride, *rest: fn(x, kernel, stride or None, *rest)


def _same_values_and_gradients(ours, theirs, args, dtype):
    tensors = [a for a in args if isinstance(a, torch.Tensor) and a.requires_grad]
    out, expected = ours(*args), theirs(*args)
    assert_same(out.detach(), expected.detach(), SUM_TOL[dtype])
    grad = randn(tuple(expected.shape), dtype, seed=9)
    mine = torch.autograd.grad(out, tensors, grad)
    reference = torch.autograd.grad(expected, tensors, grad)
    for a, b in zip(mine, reference):
        assert_same(a, b, SUM_TOL[dtype])


def test_compile_a_network_of_nbops_ops_whole():
    """torch.compile(fullgraph=True) captures the ops (no graph break) forward and backward, with the
    same outputs and gradients as eager nbops (aot_eager: the graph without code generation)."""

    def net(x, w, b):
        y = torch.ops.nbops.conv2d(x, w, b, 1, 1)
        y = torch.ops.nbops.max_pool2d(y, 2)
        y = torch.ops.nbops.sigmoid(y)
        return torch.ops.nbops.avg_pool2d(y, 2).sum()

    compiled = torch.compile(net, fullgraph=True, backend="aot_eager")
    x, w, b = _leaf((2, 3, 16, 16), torch.float32, 1), _leaf((4, 3, 3, 3), torch.float32, 2), _leaf((4,), torch.float32, 3)
    eager = net(x, w, b)
    grads = torch.autograd.grad(eager, (x, w, b))
    traced = compiled(x, w, b)
    assert_same(traced.detach(), eager.detach(), SUM_TOL[torch.float32])
    for mine, expected in zip(torch.autograd.grad(traced, (x, w, b)), grads):
        assert_same(mine, expected, SUM_TOL[torch.float32])


def test_compile_a_model_of_nbops_nn_modules_whole():
    """torch.compile(fullgraph=True) of a model of the nbops.nn modules whose ops are registered so far
    (Conv2d, BatchNorm2d, ConvTranspose2d, MaxPool2d, AvgPool2d, Sigmoid, Flatten) and a torch Linear:
    while traced the modules call torch.ops.nbops, so there is no graph break; training gradients and
    running statistics, then eval outputs, equal the uncompiled model's."""
    import nbops.nn as nnb

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        nnb.Conv2d(3, 6, 3, padding=1), nnb.BatchNorm2d(6), nnb.Sigmoid(), nnb.MaxPool2d(2),
        nnb.ConvTranspose2d(6, 4, 2, stride=2), nnb.AvgPool2d(3, stride=2, padding=1), nnb.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    )
    twin = copy.deepcopy(model)
    compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
    x = randn((2, 3, 16, 16), torch.float32, seed=1)
    # training: the same gradients and running statistics as the uncompiled twin, step by step
    target = torch.tensor([1, 3])
    loss = torch.compile(nnb.CrossEntropyLoss(label_smoothing=0.1), fullgraph=True, backend="aot_eager")
    for step in range(2):
        got = torch.autograd.grad(loss(compiled(x + step), target), list(model.parameters()))
        expected = torch.autograd.grad(nnb.CrossEntropyLoss(label_smoothing=0.1)(twin(x + step), target), list(twin.parameters()))
        for mine, reference in zip(got, expected):
            assert_same(mine, reference, SUM_TOL[torch.float32])
        for mine, reference in zip(model.buffers(), twin.buffers()):
            assert_same(mine, reference, SUM_TOL[torch.float32])
    model.eval(), twin.eval()
    assert_same(compiled(x), twin(x), SUM_TOL[torch.float32])


def test_export_a_model_of_nbops_nn_modules(tmp_path):
    """torch.export.export of a model of nbops.nn modules (eval) holds nbops' ops in its graph, and the
    program saved and loaded again gives the model's outputs."""
    import nbops.nn as nnb

    torch.manual_seed(0)
    model = torch.nn.Sequential(
        nnb.Conv2d(3, 6, 3, padding=1), nnb.BatchNorm2d(6), nnb.Sigmoid(), nnb.MaxPool2d(2),
        nnb.ConvTranspose2d(6, 4, 2, stride=2), nnb.AvgPool2d(3, stride=2, padding=1), nnb.Flatten(),
        torch.nn.Linear(4 * 8 * 8, 5),
    ).eval()
    x = randn((2, 3, 16, 16), torch.float32, seed=1)
    program = torch.export.export(model, (x,))
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"nbops.conv2d.default", "nbops.batch_norm.default", "nbops.sigmoid.default", "nbops.max_pool2d.default",
            "nbops.conv_transpose2d.default", "nbops.avg_pool2d.default"} <= targets
    path = tmp_path / "model.pt2"
    torch.export.save(program, path)
    assert_same(torch.export.load(path).module()(x), model(x), SUM_TOL[torch.float32])


class _EveryModule(torch.nn.Module):
    """A network with every nbops.nn module: a convolution trunk, an RoI head, an upsampling branch."""

    def __init__(self, nnb):
        super().__init__()
        self.trunk = torch.nn.Sequential(nnb.Conv2d(3, 6, 3, padding=1), nnb.BatchNorm2d(6), nnb.Sigmoid(), nnb.MaxPool2d(2))
        self.roi = nnb.RoIPool(3, 0.5)
        self.head = torch.nn.Sequential(nnb.Flatten(), torch.nn.Linear(6 * 9, 8), nnb.BatchNorm1d(8), torch.nn.Linear(8, 4))
        self.up = torch.nn.Sequential(nnb.ConvTranspose2d(6, 2, 2, stride=2), nnb.AvgPool2d(2))

    def forward(self, x, boxes):
        features = self.trunk(x)
        return self.head(self.roi(features, boxes)), self.up(features)


def test_compile_a_model_of_every_nbops_nn_module():
    """Every nbops.nn module (with both losses) in one model under torch.compile(fullgraph=True): two
    training steps give the uncompiled twin's gradients and running statistics, then the same eval
    outputs."""
    import nbops.nn as nnb

    torch.manual_seed(0)
    model = _EveryModule(nnb)
    twin = copy.deepcopy(model)
    ce, mse = nnb.CrossEntropyLoss(), nnb.MSELoss()

    def objective(net, x, boxes, labels, target):
        scores, up = net(x, boxes)
        return ce(scores, labels) + mse(up, target)

    compiled = torch.compile(objective, fullgraph=True, backend="aot_eager")
    x = randn((2, 3, 16, 16), torch.float32, seed=1)
    boxes = [torch.tensor([[0.0, 0.0, 10.0, 12.0], [4.0, 2.0, 14.0, 15.0]]), torch.tensor([[1.0, 1.0, 8.0, 9.0]])]
    labels, target = torch.tensor([0, 3, 1]), randn((2, 2, 8, 8), torch.float32, seed=2)
    for step in range(2):
        got = torch.autograd.grad(compiled(model, x + step, boxes, labels, target), list(model.parameters()))
        expected = torch.autograd.grad(objective(twin, x + step, boxes, labels, target), list(twin.parameters()))
        for mine, reference in zip(got, expected):
            assert_same(mine, reference, SUM_TOL[torch.float32])
        for mine, reference in zip(model.buffers(), twin.buffers()):
            assert_same(mine, reference, SUM_TOL[torch.float32])
    model.eval(), twin.eval()
    for mine, reference in zip(compiled(model, x, boxes, labels, target).reshape(1), objective(twin, x, boxes, labels, target).reshape(1)):
        assert_same(mine, reference, SUM_TOL[torch.float32])


EXPORT = r"""
import sys
import torch, nbops.nn as nnb
torch.manual_seed(0)
model = torch.nn.Sequential(nnb.Conv2d(3, 4, 3, padding=1), nnb.BatchNorm2d(4), nnb.Sigmoid(), nnb.MaxPool2d(2)).eval()
x = torch.randn(2, 3, 8, 8)
torch.export.save(torch.export.export(model, (x,)), sys.argv[1] + "/model.pt2")
torch.save((x, model(x).detach()), sys.argv[1] + "/io.pt")
"""

LOAD = r"""
import sys
{imports}
program = torch.export.load(sys.argv[1] + "/model.pt2")
x, expected = torch.load(sys.argv[1] + "/io.pt")
print(float((program.module()(x) - expected).abs().max()), "torch" in sys.modules)
"""


@pytest.mark.parametrize("imports", ["import nbops\nimport torch", "import torch\nimport nbops"])
def test_an_exported_program_loads_after_import_nbops_alone(tmp_path, imports):
    """A program exported with nbops' ops loads in a new process after `import nbops` (before or after
    torch): nbops registers torch.ops.nbops once torch is there."""
    import subprocess
    import sys

    def run(code):
        result = subprocess.run([sys.executable, "-c", code, str(tmp_path)], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stderr
        return result.stdout

    run(EXPORT)
    difference, _ = run(LOAD.format(imports=imports)).split()
    assert float(difference) <= 1e-6


@pytest.mark.parametrize("padding,kernel,dilation", [("same", 3, 1), ("same", 4, 1), ("same", (2, 3), (3, 1)), ("valid", 3, 2)])
def test_compiled_conv2d_module_with_string_padding(padding, kernel, dilation):
    """nbops.nn.Conv2d with padding='same' or 'valid' traces through the op too (an uneven 'same' pads
    the input first), with torch's result."""
    import nbops.nn as nnb

    torch.manual_seed(0)
    module = nnb.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
    reference = torch.nn.Conv2d(3, 4, kernel, padding=padding, dilation=dilation)
    reference.load_state_dict(module.state_dict())
    x = randn((2, 3, 11, 10), torch.float32, seed=1)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    assert_same(compiled(x), reference(x), SUM_TOL[torch.float32])
