import pytest
import torch
import torch.nn.functional as F
from conftest import nbytes, randn

import nbops


@pytest.mark.parametrize(
    "reduction,smoothing", [("mean", 0.0), ("mean", 0.1), ("none", 0.0)], ids=["mean", "mean-smooth0.1", "none"]
)
def test_cross_entropy(compare, reduction, smoothing):
    logits = randn(256, 1000) * 3  # ImageNet classifier output
    target = torch.randint(0, 1000, (256,), generator=torch.Generator().manual_seed(1))
    case = f"256x1000 reduction={reduction} label_smoothing={smoothing}"
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    compare(
        f"cross_entropy {case}", case, lambda: F.cross_entropy(logits, target, **kw),
        lambda: nbops.cross_entropy(logits, target, **kw), nbytes(logits, target),
    )


@pytest.mark.parametrize("reduction", ["mean", "none"])
@pytest.mark.parametrize("numel", [4_000_000, 16_000_000])
def test_mse_loss(compare, numel, reduction):
    x, y = randn(numel), randn(numel, seed=1)
    case = f"{numel} reduction={reduction}"
    out_bytes = nbytes(x) if reduction == "none" else 0
    compare(
        f"mse_loss {case}", case, lambda: F.mse_loss(x, y, reduction=reduction),
        lambda: nbops.mse_loss(x, y, reduction=reduction), nbytes(x, y) + out_bytes,
    )
