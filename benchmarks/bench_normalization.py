import pytest
import torch
import torch.nn.functional as F
from conftest import nbytes, randn

import nbops

CASES = [(32, 256, 56, 56), (32, 64, 112, 112), (256, 1024)]


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("shape", CASES, ids=lambda v: "x".join(map(str, v)))
def test_batch_norm(compare, shape, training):
    x = randn(*shape)
    c = shape[1]
    weight, bias = randn(c, seed=1), randn(c, seed=2)
    rm_t, rv_t = torch.zeros(c), torch.ones(c)
    rm_n, rv_n = torch.zeros(c), torch.ones(c)
    mode = "train" if training else "eval"
    case = f"{'x'.join(map(str, shape))} {mode}"
    # training reads the input twice at least (statistics, then normalisation) in any implementation
    traffic = (3 if training else 2) * nbytes(x)
    compare(
        f"batch_norm {case}", case,
        lambda: F.batch_norm(x, rm_t, rv_t, weight, bias, training, 0.1, 1e-5),
        lambda: nbops.batch_norm(x, rm_n, rv_n, weight, bias, training, 0.1, 1e-5),
        traffic,
    )
