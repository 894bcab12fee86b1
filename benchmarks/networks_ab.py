"""Whole networks, torch and nbops alternating: torchvision's ResNet-18, ResNet-50 and MobileNetV2
(random weights, 224x224, float32) as torch builds them and after nbops.nn.convert, evaluation at batch
8 and 16 and one training step at batch 8, the two models run in turn for 5 rounds (bench_networks.py
runs each side's rounds together, so a machine whose speed drifts favours one side).

    python benchmarks/networks_ab.py

Prints each side's median and best, and the ratios torch time / nbops time (above 1: nbops is faster).
"""

import copy
import statistics
import time

import nbops.nn  # (before torch: nbops sets torch's OpenMP spin when the user has not)
import torch
import torchvision

ROUNDS = 5


def timed(fn):
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main():
    for name in ("resnet18", "resnet50", "mobilenet_v2"):
        torch.manual_seed(0)
        reference = getattr(torchvision.models, name)(weights=None)
        converted = nbops.nn.convert(copy.deepcopy(reference))
        for mode, batch in (("eval", 8), ("eval", 16), ("train", 8)):
            x = torch.randn(batch, 3, 224, 224)
            target = torch.randint(0, 1000, (batch,))

            def step(model, mode=mode, x=x, target=target):
                if mode == "eval":
                    model.eval()
                    with torch.no_grad():
                        model(x)
                else:
                    model.train()
                    model.zero_grad()
                    torch.nn.functional.cross_entropy(model(x), target).backward()

            step(reference), step(converted)  # (compilation, first-touch)
            theirs, ours = [], []
            for _ in range(ROUNDS):
                theirs.append(timed(lambda: step(reference)))
                ours.append(timed(lambda: step(converted)))
            median_t, median_n = statistics.median(theirs), statistics.median(ours)
            print(
                f"{name} {mode} batch {batch}: torch median {median_t * 1e3:.0f} ms (best {min(theirs) * 1e3:.0f}), "
                f"nbops median {median_n * 1e3:.0f} ms (best {min(ours) * 1e3:.0f}); torch/nbops "
                f"{median_t / median_n:.2f}x of medians, {min(theirs) / min(ours):.2f}x of bests",
                flush=True,
            )


if __name__ == "__main__":
    main()
