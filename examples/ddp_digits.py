"""Train the digits network (examples/train_digits.py) with DistributedDataParallel on the CPU: `world`
processes started with spawn, torch's gloo backend, each process taking its share of every batch.

    pip install -e ".[examples]"
    python examples/ddp_digits.py [--nn nbops|torch] [--world 2] [--steps 30] [--out state.pt]

Each process gets an even share of the machine's cores for its Numba (and torch) threads; the
environment variable is set before the processes start, as Numba reads it once. Rank 0 saves the
trained state_dict to --out (written whole, then renamed), and prints the last loss. With --nn torch the
same run uses torch.nn's modules: from the same seed the two give the same parameters (up to float32
rounding), which tests/test_library.py checks.
"""

from __future__ import annotations

import argparse
import os
import tempfile

import nbops.nn as nbops_nn  # (before torch: nbops then sets torch's OpenMP spin, README "Sharing the cores")
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from train_digits import build_model, load_digits


def run(rank, world, kind, steps, batch_size, lr, seed, store, out):
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    try:
        torch.manual_seed(seed)
        model = DistributedDataParallel(build_model(nbops_nn if kind == "nbops" else torch.nn))
        loss_fn = nbops_nn.CrossEntropyLoss() if kind == "nbops" else torch.nn.CrossEntropyLoss()
        optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
        train_x, train_y, _, _ = load_digits(seed)
        order = torch.randperm(len(train_y), generator=torch.Generator().manual_seed(seed))
        for step in range(steps):
            batch = order[(step * batch_size) % len(order) :][:batch_size]
            mine = batch[rank::world]  # this process's share of the batch
            optimizer.zero_grad()
            loss = loss_fn(model(train_x[mine]), train_y[mine])
            loss.backward()  # DDP averages the gradients over the processes
            optimizer.step()
        if rank == 0:
            torch.save(model.module.state_dict(), out + ".part")
            os.replace(out + ".part", out)
            print(f"{kind}: {steps} steps on {world} processes, last loss {loss.item():.4f}, saved {out}")
    finally:
        dist.destroy_process_group()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nn", choices=["nbops", "torch"], default="nbops")
    parser.add_argument("--world", type=int, default=2)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="ddp_digits_state.pt")
    args = parser.parse_args()
    # each process's threads: its share of the cores (read by Numba when a process imports it)
    os.environ.setdefault("NUMBA_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.world)))
    with tempfile.TemporaryDirectory() as directory:
        torch.multiprocessing.spawn(
            run,
            args=(args.world, args.nn, args.steps, args.batch_size, args.lr, args.seed, os.path.join(directory, "store"), args.out),
            nprocs=args.world,
        )


if __name__ == "__main__":
    main()
