import pytest
import torch
from conftest import nbytes, randn

import nbops


@pytest.mark.parametrize("numel", [4_000_000, 16_000_000])
def test_sigmoid(compare, numel):
    x = randn(numel) * 4
    case = f"{numel}"
    compare(f"sigmoid {case}", case, lambda: torch.sigmoid(x), lambda: nbops.sigmoid(x), 2 * nbytes(x))


def test_flatten(compare):
    x = randn(32, 2048, 7, 7)
    case = "32x2048x7x7 from dim 1 (a view: O(1))"
    compare(f"flatten {case}", case, lambda: torch.flatten(x, 1), lambda: nbops.flatten(x, 1), 0)
