"""Train the same small CNN twice on scikit-learn's 8x8 digits, once with every layer from nbops.nn and
once with torch.nn, from the same seed and the same initial weights, and compare.

    pip install -e ".[examples]"
    python examples/train_digits.py [--epochs 12] [--batch-size 32] [--lr 0.01] [--seed 0]

Prints, per epoch and for both runs, the mean training loss, the test accuracy and the epoch's time,
and ends with the line `test accuracy: nbops A torch B`. Offline: the digits data ships with
scikit-learn. nbops' first epoch includes compiling its kernels when Numba's cache is cold.

The network uses only the ten nbops operators: convolutions, batch norm, sigmoid, max and average
pooling, flatten, cross entropy; the classifier is a convolution whose kernel covers the last 2x2 map.
"""

from __future__ import annotations

import argparse
import time

import nbops.nn as nbops_nn  # (before torch: nbops then sets torch's OpenMP spin, README "Sharing the cores")
import torch


def build_model(nn) -> torch.nn.Sequential:
    """The network, from `nn` = torch.nn or nbops.nn (the same constructors)."""
    return torch.nn.Sequential(
        nn.Conv2d(1, 16, 3, padding=1),  # 1x8x8 -> 16x8x8
        nn.BatchNorm2d(16),
        nn.Sigmoid(),
        nn.MaxPool2d(2),  # -> 16x4x4
        nn.Conv2d(16, 32, 3, padding=1),  # -> 32x4x4
        nn.BatchNorm2d(32),
        nn.Sigmoid(),
        nn.AvgPool2d(2),  # -> 32x2x2
        nn.Conv2d(32, 10, 2),  # -> 10x1x1: the classifier
        nn.Flatten(),  # -> 10 logits
    )


def load_digits(seed: int):
    """(train_x, train_y, test_x, test_y): 1797 images of 8x8, standardised, split 80/20 at random."""
    from sklearn.datasets import load_digits as sklearn_digits

    data = sklearn_digits()
    x = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1)
    y = torch.tensor(data.target, dtype=torch.int64)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed))
    x, y = x[order], y[order]
    cut = int(0.8 * len(y))
    mean, std = x[:cut].mean(), x[:cut].std()
    x = (x - mean) / std
    return x[:cut], y[:cut], x[cut:], y[cut:]


def accuracy(model, x, y) -> float:
    model.eval()
    with torch.no_grad():
        predicted = model(x).argmax(dim=1)
    model.train()
    return (predicted == y).float().mean().item()


def train(name, model, loss_fn, data, epochs, batch_size, lr, seed):
    """Adam on shuffled mini-batches (the same order for both runs), the learning rate annealed to 0 over
    the epochs (a cosine) so that the last epochs settle; returns the final test accuracy."""
    train_x, train_y, test_x, test_y = data
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    shuffle = torch.Generator().manual_seed(seed)
    test_accuracy = 0.0
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        total, batches = 0.0, 0
        order = torch.randperm(len(train_y), generator=shuffle)
        for first in range(0, len(order), batch_size):
            index = order[first : first + batch_size]
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[index]), train_y[index])
            loss.backward()
            optimizer.step()
            total += loss.item()
            batches += 1
        schedule.step()
        test_accuracy = accuracy(model, test_x, test_y)
        seconds = time.perf_counter() - start
        print(f"{name:5s} epoch {epoch:2d}  loss {total / batches:.4f}  test accuracy {test_accuracy:.4f}  time {seconds:.2f} s", flush=True)
    return test_accuracy


def main(argv=None) -> tuple[float, float]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = load_digits(args.seed)
    torch.manual_seed(args.seed)
    reference = build_model(torch.nn)
    ours = build_model(nbops_nn)
    ours.load_state_dict(reference.state_dict())  # the same initial weights
    print(f"digits: {len(data[1])} training and {len(data[3])} test images, {args.epochs} epochs, batch {args.batch_size}")

    results = {}
    for name, model, loss_fn in (
        ("nbops", ours, nbops_nn.CrossEntropyLoss()),
        ("torch", reference, torch.nn.CrossEntropyLoss()),
    ):
        results[name] = train(name, model, loss_fn, data, args.epochs, args.batch_size, args.lr, args.seed)
    print(f"test accuracy: nbops {results['nbops']:.4f} torch {results['torch']:.4f}")
    return results["nbops"], results["torch"]


if __name__ == "__main__":
    main()
