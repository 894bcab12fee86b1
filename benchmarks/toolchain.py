"""Issue 15's figures: what the torch custom operators cost, torch in the same run.

    python benchmarks/toolchain.py

1. Per-call cost on tiny inputs (median wall time of many calls, us): torch's op, the nbops public
   function (the eager path the nbops.nn modules take), and the custom operator torch.ops.nbops.<name>
   called directly (the dispatcher, then the same function).
2. A small model (conv, batch norm, sigmoid, max pool, transposed conv, avg pool, flatten, linear;
   batch 8, 3x32x32) as torch.nn modules, as nbops.nn modules eager, and the nbops model under
   torch.compile(fullgraph=True) with the aot_eager and inductor backends: one training step (forward,
   cross-entropy, backward, SGD), median ms of rounds that alternate between the four.
"""

import copy
import statistics
import time

import nbops  # noqa: F401  (registers torch.ops.nbops once torch is imported)
import nbops.nn as nnb
import torch
import torch.nn.functional as F
import torchvision


def per_call(fn, calls=2000, rounds=5):
    fn()
    medians = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        medians.append((time.perf_counter() - start) / calls)
    return statistics.median(medians) * 1e6


def tiny_ops():
    x = torch.randn(2, 3, 8, 8)
    w = torch.randn(4, 3, 3, 3)
    boxes = torch.tensor([[0, 0.0, 0.0, 4.0, 4.0], [1, 1.0, 2.0, 6.0, 7.0]])
    v = torch.randn(16)
    cases = [
        ("sigmoid", lambda: torch.sigmoid(v), lambda: nbops.sigmoid(v), lambda: torch.ops.nbops.sigmoid(v)),
        ("conv2d", lambda: F.conv2d(x, w, None, 1, 1), lambda: nbops.conv2d(x, w, None, 1, 1),
         lambda: torch.ops.nbops.conv2d(x, w, None, 1, 1)),
        ("max_pool2d", lambda: F.max_pool2d(x, 2), lambda: nbops.max_pool2d(x, 2), lambda: torch.ops.nbops.max_pool2d(x, 2)),
        ("roi_pool", lambda: torchvision.ops.roi_pool(x, boxes, 2), lambda: nbops.roi_pool(x, boxes, 2),
         lambda: torch.ops.nbops.roi_pool(x, boxes, 2)),
    ]
    print("| op (tiny input) | torch us | nbops eager us | torch.ops.nbops us |")
    print("|---|---:|---:|---:|")
    for name, *fns in cases:
        print(f"| {name} | " + " | ".join(f"{per_call(fn):.1f}" for fn in fns) + " |")


def model(layers):
    return torch.nn.Sequential(
        layers.Conv2d(3, 16, 3, padding=1), layers.BatchNorm2d(16), layers.Sigmoid(), layers.MaxPool2d(2),
        layers.ConvTranspose2d(16, 8, 2, stride=2), layers.AvgPool2d(3, stride=2, padding=1), layers.Flatten(),
        torch.nn.Linear(8 * 16 * 16, 10),
    )


def small_model(rounds=7):
    torch.manual_seed(0)
    reference = model(torch.nn)
    mine = model(nnb)
    mine.load_state_dict(reference.state_dict())
    x, target = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    variants = {
        "torch.nn": (reference, F.cross_entropy),
        "nbops.nn eager": (mine, nbops.cross_entropy),
        "nbops.nn compiled (aot_eager)": (torch.compile(copy.deepcopy(mine), fullgraph=True, backend="aot_eager"), nbops.cross_entropy),
        "nbops.nn compiled (inductor)": (torch.compile(copy.deepcopy(mine), fullgraph=True), nbops.cross_entropy),
    }
    steps = {}
    for name, (net, loss_fn) in variants.items():
        optimizer = torch.optim.SGD(net.parameters(), lr=0.01)

        def step(net=net, loss_fn=loss_fn, optimizer=optimizer):
            optimizer.zero_grad()
            loss_fn(net(x), target).backward()
            optimizer.step()

        step()  # (compilation)
        steps[name] = step
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            start = time.perf_counter()
            for _ in range(5):
                step()
            times[name].append((time.perf_counter() - start) / 5)
    print("\n| small model, training step (batch 8, 3x32x32) | median ms |")
    print("|---|---:|")
    for name, values in times.items():
        print(f"| {name} | {statistics.median(values) * 1e3:.2f} |")


if __name__ == "__main__":
    tiny_ops()
    small_model()
