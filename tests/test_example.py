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
