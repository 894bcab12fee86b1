"""What sharing the cores with torch costs a converted model: torchvision's ResNet-18 (batch 8, 224x224,
evaluation) after nbops.nn.convert, timed whole (torch and nbops ops alternate, each library's worker
threads meeting the other's) against the sum of its layers timed one by one, each on its own input after
a pause that lets every worker thread go to sleep (no contention, but each layer pays for waking its
workers).

    python benchmarks/contention.py                       # as nbops sets torch's OpenMP up at import
    GOMP_SPINCOUNT=300000 python benchmarks/contention.py # libgomp's default spin (torch alone)
    OMP_WAIT_POLICY=PASSIVE python benchmarks/contention.py

Layers are the model's leaf modules (convolutions, batch norms, ReLUs, pools, the Linear head); the
residual additions and the flatten are not modules, so the sum leaves them out (a few ms).
"""

import copy
import os
import sys
import time

import nbops  # noqa: F401  (before torch: nbops sets torch's OpenMP spin when the user has not)
import nbops.nn
import torch
import torchvision

ROUNDS = 5


def best(fn, rounds=ROUNDS):
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    torch.manual_seed(0)
    model = nbops.nn.convert(copy.deepcopy(torchvision.models.resnet18(weights=None))).eval()
    x = torch.randn(8, 3, 224, 224)
    calls = []
    hooks = [
        m.register_forward_hook(lambda module, args, out: calls.append((module, args)))
        for m in model.modules()
        if not list(m.children())
    ]
    with torch.no_grad():
        model(x)
        for hook in hooks:
            hook.remove()
        model(x)
        whole = best(lambda: model(x))
        alone = 0.0
        for module, args in calls:
            module(*args)  # (warm)
            time.sleep(0.05)
            alone += best(lambda: module(*args), 3)
    setting = os.environ.get("OMP_WAIT_POLICY") and f"OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    setting = setting or f"GOMP_SPINCOUNT={os.environ.get('GOMP_SPINCOUNT', 'unset')}"
    print(f"{setting}: converted ResNet-18 b8 eval {whole * 1e3:.1f} ms whole, {alone * 1e3:.1f} ms as "
          f"{len(calls)} layers timed alone: contention {100 * (whole / alone - 1):+.1f}%")


if __name__ == "__main__":
    sys.exit(main())
