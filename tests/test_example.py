"""The training example (examples/train_digits.py) run as a user runs it, with its default epochs."""

import os
import re
import subprocess
import sys

import pytest

pytest.importorskip("sklearn", reason="the example needs scikit-learn (pip install -e '.[examples]')")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_train_digits_reaches_torch_accuracy():
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, "examples", "train_digits.py")],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    for name in ("nbops", "torch"):  # per-epoch loss, accuracy and time for both runs
        epochs = [line for line in lines if re.match(rf"{name}\s+epoch\s+\d+\s+loss [\d.]+\s+test accuracy [\d.]+\s+time [\d.]+ s", line)]
        assert len(epochs) == 12, result.stdout
    match = re.fullmatch(r"test accuracy: nbops ([\d.]+) torch ([\d.]+)", lines[-1])
    assert match, lines[-1]
    ours, theirs = float(match.group(1)), float(match.group(2))
    assert ours >= 0.95, result.stdout
    assert abs(ours - theirs) <= 0.02, result.stdout


def test_ddp_digits_gives_torch_parameters(tmp_path):
    """examples/ddp_digits.py: DistributedDataParallel (gloo, 2 processes started with spawn) over a
    network of nbops.nn modules, a few SGD steps, gives the parameters and running statistics of the
    same run with torch.nn modules. The trained state is what is judged: torch's gloo backend now and
    then aborts a process at interpreter exit after a clean destroy_process_group (torch.nn alone too),
    so an exit code is accepted when the state was written whole."""
    import torch

    states = {}
    for kind in ("nbops", "torch"):
        out = tmp_path / f"{kind}.pt"
        result = subprocess.run(
            [sys.executable, os.path.join(ROOT, "examples", "ddp_digits.py"), "--nn", kind, "--steps", "8", "--out", str(out)],
            capture_output=True, text=True, timeout=600, cwd=os.path.join(ROOT, "examples"),
        )
        assert out.exists(), result.stderr  # (written to a .part file, then renamed)
        states[kind] = torch.load(out)
    assert states["nbops"].keys() == states["torch"].keys()
    for name, ours in states["nbops"].items():
        theirs = states["torch"][name]
        assert torch.allclose(ours.double(), theirs.double(), rtol=1e-4, atol=1e-5), name
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    try:
        from train_digits import build_model
    finally:
        sys.path.pop(0)
    torch.manual_seed(0)  # the example's seed: its initial weights
    initial = build_model(torch.nn).state_dict()
    moved = max(float((states["nbops"][name] - initial[name]).abs().max()) for name in initial if "weight" in name)
    assert moved > 1e-3  # (the parameters compared were trained)
