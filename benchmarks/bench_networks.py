"""Whole networks as users run them: does my network get faster?

torchvision's ResNet-18, ResNet-50 and MobileNetV2 (random weights, 3x224x224 images, float32) as torch builds them
(`torch`) and after `nbops.nn.convert` (`nbops`: its convolutions, batch norms and max pool run on nbops,
the ReLUs, residual adds, adaptive average pool and Linear head stay torch's), in one group per case:
evaluation forward at batch 8 and 16, and one training step at batch 8 (forward, cross entropy,
backward into every parameter). The report lists them first.

Each side also records a profile (`extra_info["profile"]`): the share of its time spent in each op
family, forward and backward together, measured once after the timing with module hooks (forward) and
autograd node hooks (backward); what is left ("other") is the torch ops between them and Python.
"""

import copy
import time
from collections import defaultdict

import pytest
import torch
import torch.nn.functional as F
import torchvision
from conftest import randn

import nbops.nn

FAMILIES = {  # module type -> op family, for both sides
    torch.nn.Conv2d: "conv", nbops.nn.Conv2d: "conv",
    torch.nn.BatchNorm2d: "batch_norm", nbops.nn.BatchNorm2d: "batch_norm",
    torch.nn.MaxPool2d: "pooling", nbops.nn.MaxPool2d: "pooling", torch.nn.AdaptiveAvgPool2d: "pooling",
}

CASES = [  # (network, mode, batch)
    ("resnet18", "eval", 8), ("resnet18", "eval", 16), ("resnet18", "train", 8),
    ("resnet50", "eval", 8), ("resnet50", "eval", 16), ("resnet50", "train", 8),
    ("mobilenet_v2", "eval", 8), ("mobilenet_v2", "eval", 16), ("mobilenet_v2", "train", 8),  # (depthwise layers)
]
FLOPS = {"resnet18": 1.82e9, "resnet50": 4.11e9, "mobilenet_v2": 0.30e9}  # multiply-adds per 224x224 image (forward)


def _models(network: str):
    torch.manual_seed(0)
    reference = getattr(torchvision.models, network)(weights=None)
    return reference, nbops.nn.convert(copy.deepcopy(reference))


def _step(model, mode: str, x, labels):
    if mode == "eval":
        model.eval()

        def run():
            with torch.no_grad():
                return model(x)
    else:
        model.train()
        params = list(model.parameters())

        def run():
            return torch.autograd.grad(F.cross_entropy(model(x), labels), params)

    return run


def profile(model, run, rounds: int = 2) -> dict:
    """The share of one call of `run` spent in each op family of `model` (forward: module hooks around
    each layer; backward: hooks on the autograd node each layer's output came from), and in the rest."""
    spent = defaultdict(float)
    starts = {}
    handles = []

    def before_backward(node, family):
        node.register_prehook(lambda grads: starts.__setitem__(node, time.perf_counter()))
        node.register_hook(lambda grads_in, grads_out: spent.__setitem__(family, spent[family] + time.perf_counter() - starts.pop(node)))

    for module in model.modules():
        family = FAMILIES.get(type(module))
        if family is None:
            continue

        def pre(module, args, family=family):
            starts[module] = time.perf_counter()

        def post(module, args, out, family=family):
            spent[family] += time.perf_counter() - starts.pop(module)
            if isinstance(out, torch.Tensor) and out.grad_fn is not None:
                before_backward(out.grad_fn, family)

        handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]
    try:
        run()
        spent.clear()
        start = time.perf_counter()
        for _ in range(rounds):
            run()
        total = (time.perf_counter() - start) / rounds
    finally:
        for handle in handles:
            handle.remove()
    shares = {family: seconds / rounds / total for family, seconds in sorted(spent.items())}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    return shares


@pytest.mark.parametrize("network,mode,batch", CASES, ids=lambda v: str(v))
@pytest.mark.parametrize("impl", ["torch", "nbops"])
def test_network(benchmark, impl, network, mode, batch):
    reference, converted = _models(network)
    model = reference if impl == "torch" else converted
    x = randn(batch, 3, 224, 224, seed=1)
    labels = torch.randint(0, 1000, (batch,), generator=torch.Generator().manual_seed(2))
    run = _step(model, mode, x, labels)
    run()  # warm-up: compiles or loads the nbops kernels, lets torch allocate its buffers
    case = f"{mode} batch {batch} 224x224" + (" (forward, cross entropy, backward)" if mode == "train" else "")
    benchmark.group = f"{network} {case}"
    flops = 2 * FLOPS[network] * batch * (3 if mode == "train" else 1)
    benchmark.extra_info.update(op=network, case=case, impl=impl, bytes=0, flops=int(flops), network=True)
    benchmark.pedantic(run, rounds=3 if network == "resnet50" else 5, iterations=1, warmup_rounds=1)
    benchmark.extra_info["profile"] = profile(model, run)
