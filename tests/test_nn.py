"""nbops.nn modules against their torch.nn / torchvision.ops twins: same construction, parameters,
buffers, initialisation and state_dict keys, same outputs and gradients, state_dicts loading either way."""

import pytest
import torch
import torchvision

import nbops.nn as nnb
from reference import SUM_TOL, assert_same, distinct, randn
from test_roi import _boxes

TOL = SUM_TOL[torch.float32]

# (nbops class, torch class, constructor args, input shape)
MODULES = [
    (nnb.Conv2d, torch.nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3), (2, 3, 8, 9)),
    (nnb.Conv2d, torch.nn.Conv2d, dict(in_channels=4, out_channels=6, kernel_size=(3, 2), stride=2, padding=1, dilation=(1, 2), groups=2, bias=False), (2, 4, 9, 9)),
    (nnb.Conv2d, torch.nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, padding="same"), (3, 7, 7)),
    (nnb.Conv2d, torch.nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, padding=2, padding_mode="reflect"), (2, 3, 6, 7)),
    (nnb.Conv2d, torch.nn.Conv2d, dict(in_channels=3, out_channels=4, kernel_size=3, padding=1, padding_mode="circular"), (2, 3, 6, 7)),
    (nnb.ConvTranspose2d, torch.nn.ConvTranspose2d, dict(in_channels=4, out_channels=3, kernel_size=3, stride=2, padding=1, output_padding=1), (2, 4, 5, 5)),
    (nnb.ConvTranspose2d, torch.nn.ConvTranspose2d, dict(in_channels=4, out_channels=6, kernel_size=2, stride=2, groups=2, bias=False, dilation=1), (4, 5, 5)),
    (nnb.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=3, stride=2, padding=1), (2, 3, 9, 9)),
    (nnb.MaxPool2d, torch.nn.MaxPool2d, dict(kernel_size=2, ceil_mode=True, dilation=2), (2, 3, 9, 9)),
    (nnb.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True), (2, 3, 9, 9)),
    (nnb.AvgPool2d, torch.nn.AvgPool2d, dict(kernel_size=2, divisor_override=3), (3, 8, 8)),
    (nnb.BatchNorm2d, torch.nn.BatchNorm2d, dict(num_features=3), (4, 3, 5, 5)),
    (nnb.BatchNorm2d, torch.nn.BatchNorm2d, dict(num_features=3, momentum=None, eps=1e-3), (4, 3, 5, 5)),
    (nnb.BatchNorm2d, torch.nn.BatchNorm2d, dict(num_features=3, affine=False, track_running_stats=False), (4, 3, 5, 5)),
    (nnb.BatchNorm1d, torch.nn.BatchNorm1d, dict(num_features=5), (8, 5)),
    (nnb.BatchNorm1d, torch.nn.BatchNorm1d, dict(num_features=5, momentum=0.3), (8, 5, 7)),
    (nnb.Flatten, torch.nn.Flatten, dict(), (2, 3, 4, 5)),
    (nnb.Flatten, torch.nn.Flatten, dict(start_dim=0, end_dim=2), (2, 3, 4, 5)),
    (nnb.Sigmoid, torch.nn.Sigmoid, dict(), (3, 4, 5)),
]


def _pair(ours_class, torch_class, kwargs):
    torch.manual_seed(0)
    ours = ours_class(**kwargs)
    torch.manual_seed(0)
    theirs = torch_class(**kwargs)
    return ours, theirs


def _same_state(ours, theirs):
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for key in a:
        assert torch.equal(a[key], b[key]), key


@pytest.mark.parametrize("ours_class,torch_class,kwargs,shape", MODULES)
def test_module_matches_its_torch_twin(ours_class, torch_class, kwargs, shape):
    ours, theirs = _pair(ours_class, torch_class, kwargs)
    assert isinstance(ours, torch_class)
    assert repr(ours) == repr(theirs)
    _same_state(ours, theirs)  # same parameters, buffers, keys and initialisation
    x = randn(shape) * 2 + 0.5 if "Max" not in torch_class.__name__ else distinct(shape)
    for mode in ("train", "eval", "train"):  # batch norm: statistics updated, then used, then updated
        ours.train(mode == "train")
        theirs.train(mode == "train")
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = ours(xa), theirs(xb)
        assert_same(out.detach(), expected.detach(), TOL)
        grad = randn(tuple(expected.shape), seed=3)
        out.backward(grad)
        expected.backward(grad)
        assert_same(xa.grad, xb.grad, TOL)
        for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
            assert_same(p.grad, q.grad, TOL)
        for (name, a), (_, b) in zip(ours.named_buffers(), theirs.named_buffers()):
            assert_same(a, b, TOL)


def test_conv_transpose_output_size_like_torch():
    ours, theirs = _pair(nnb.ConvTranspose2d, torch.nn.ConvTranspose2d, dict(in_channels=2, out_channels=3, kernel_size=3, stride=2))
    x = randn((1, 2, 4, 4))
    assert_same(ours(x, output_size=[10, 9]), theirs(x, output_size=[10, 9]), TOL)


def test_losses_match_their_torch_twins():
    x = randn((6, 5)) * 2
    target = torch.tensor([0, 4, 2, 2, 1, 3])
    weight = torch.linspace(0.5, 2.0, 5)
    for kwargs in [dict(), dict(weight=weight, ignore_index=2, label_smoothing=0.1), dict(reduction="none")]:
        ours, theirs = nnb.CrossEntropyLoss(**kwargs), torch.nn.CrossEntropyLoss(**kwargs)
        _same_state(ours, theirs)
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = ours(xa, target), theirs(xb, target)
        assert_same(out.detach(), expected.detach(), TOL)
        out.sum().backward()
        expected.sum().backward()
        assert_same(xa.grad, xb.grad, TOL)
    y = randn((6, 5), seed=1)
    for reduction in ("mean", "sum", "none"):
        xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
        out, expected = nnb.MSELoss(reduction=reduction)(xa, y), torch.nn.MSELoss(reduction=reduction)(xb, y)
        assert_same(out.detach(), expected.detach(), TOL)
        out.sum().backward()
        expected.sum().backward()
        assert_same(xa.grad, xb.grad, TOL)


def test_roi_pool_module_matches_torchvision():
    ours, theirs = nnb.RoIPool((3, 2), 0.5), torchvision.ops.RoIPool((3, 2), 0.5)
    assert isinstance(ours, torchvision.ops.RoIPool) and repr(ours) == repr(theirs)
    x = distinct((2, 3, 10, 12))
    rois = _boxes(8, 10, 12, 2, torch.float32, scale=0.5)
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, expected = ours(xa, rois), theirs(xb, rois)
    assert_same(out.detach(), expected.detach(), dict(rtol=0, atol=0))
    out.sum().backward()
    expected.sum().backward()
    assert_same(xa.grad, xb.grad)


def _model(nn):
    return torch.nn.Sequential(
        nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.Sigmoid(), nn.MaxPool2d(2),
        nn.ConvTranspose2d(4, 4, 2, stride=2), nn.AvgPool2d(2), nn.Flatten(),
    )


def test_state_dicts_load_either_way_and_models_agree():
    torch.manual_seed(1)
    theirs = _model(torch.nn)
    ours = _model(nnb)
    ours.load_state_dict(theirs.state_dict())
    _same_state(ours, theirs)
    x = randn((3, 1, 8, 8))
    assert_same(ours(x), theirs(x), TOL)
    ours.eval(), theirs.eval()
    assert_same(ours(x), theirs(x), TOL)
    torch.manual_seed(2)
    fresh = _model(torch.nn)
    fresh.load_state_dict(ours.state_dict())  # nbops' state_dict into a torch model
    _same_state(fresh, ours)


def test_modules_under_no_grad_give_plain_results():
    conv = nnb.Conv2d(2, 3, 3)
    x = randn((1, 2, 5, 5))
    with torch.no_grad():
        out = conv(x)
        assert out.grad_fn is None and not out.requires_grad
        assert_same(out, torch.nn.functional.conv2d(x, conv.weight, conv.bias), TOL)
    assert conv(x).grad_fn is not None  # the weight requires grad


# ----------------------------------------------------------------------------------------- convert()


def _twin_counts(model):
    return {cls.__name__: sum(type(m) is cls for m in model.modules()) for cls in set(nnb._TWINS.values())}


@pytest.mark.parametrize("arch", ["resnet18", "resnet50"])
def test_converted_resnet_matches_torch(arch):
    """torchvision's ResNet, converted: same outputs, parameter gradients and running statistics as the
    unconverted model (float64, so that the comparison is tight), in training and in evaluation; a
    state_dict from either loads into the other."""
    torch.manual_seed(0)
    reference = getattr(torchvision.models, arch)(weights=None).double()
    model = getattr(torchvision.models, arch)(weights=None).double()
    model.load_state_dict(reference.state_dict())
    torch_types = {type(m) for m in reference.modules()}
    assert nnb.convert(model) is model
    counts = _twin_counts(model)
    assert counts["Conv2d"] == sum(type(m) is torch.nn.Conv2d for m in reference.modules()) > 0
    assert counts["BatchNorm2d"] == sum(type(m) is torch.nn.BatchNorm2d for m in reference.modules()) > 0
    assert counts["MaxPool2d"] == 1
    assert {type(m) for m in model.modules()} - set(nnb._TWINS.values()) == torch_types - set(nnb._TWINS)  # the rest as it was
    assert model.training
    x = randn((2, 3, 64, 64), torch.float64, seed=1)
    grad_output = randn((2, 1000), torch.float64, seed=2)
    tight = dict(rtol=1e-8, atol=1e-8)
    out, expected = model(x), reference(x)
    assert_same(out, expected, tight)
    out.backward(grad_output)
    expected.backward(grad_output)
    for (name, mine), (_, theirs) in zip(model.named_parameters(), reference.named_parameters()):
        assert mine.grad is not None, name
        assert_same(mine.grad, theirs.grad, tight)
    for (name, mine), (_, theirs) in zip(model.named_buffers(), reference.named_buffers()):
        assert_same(mine, theirs, tight)
    model.eval()
    reference.eval()
    with torch.no_grad():
        assert_same(model(x), reference(x), tight)
    fresh = getattr(torchvision.models, arch)(weights=None).double()
    fresh.load_state_dict(model.state_dict())
    assert nnb.convert(fresh).load_state_dict(reference.state_dict()) is not None
    assert list(fresh.state_dict()) == list(reference.state_dict())


def test_convert_swaps_exact_types_only_and_keeps_the_module():
    class MyConv(torch.nn.Conv2d):  # a user's subclass: its forward may differ, so it stays
        pass

    conv = torch.nn.Conv2d(4, 4, 3)
    hooked = []
    conv.register_forward_hook(lambda module, args, out: hooked.append(type(module)))
    model = torch.nn.Sequential(MyConv(3, 4, 3), torch.nn.ReLU(), conv, torch.nn.BatchNorm2d(4), torch.nn.Flatten(), torch.nn.Sigmoid())
    model.eval()
    parameters = list(model.parameters())
    assert nnb.convert(model) is model
    assert [type(m) for m in model] == [MyConv, torch.nn.ReLU, nnb.Conv2d, nnb.BatchNorm2d, nnb.Flatten, nnb.Sigmoid]
    assert model[2] is conv and list(model.parameters()) == parameters and not model.training
    model(randn((1, 3, 9, 9)))
    assert hooked == [nnb.Conv2d]
    assert nnb.convert(model) is model and type(model[2]) is nnb.Conv2d  # converting twice changes nothing
    single = torch.nn.MaxPool2d(2)
    assert nnb.convert(single) is single and type(single) is nnb.MaxPool2d
    losses = [torch.nn.CrossEntropyLoss(), torch.nn.MSELoss(), torchvision.ops.RoIPool(2, 0.5), torch.nn.ConvTranspose2d(2, 2, 2)]
    assert [type(nnb.convert(m)) for m in losses] == [nnb.CrossEntropyLoss, nnb.MSELoss, nnb.RoIPool, nnb.ConvTranspose2d]
