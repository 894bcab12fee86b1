import pytest
import torch.nn.functional as F
from conftest import nbytes, randn

import nbops

# ResNet-50: the stem's max pool, and average pools at stage resolutions (incl. the global pool head)
MAX_CASES = [
    ((32, 64, 112, 112), 3, 2, 1),
    ((32, 64, 112, 112), 2, 2, 0),
    ((32, 256, 56, 56), 3, 1, 1),
]
AVG_CASES = [
    ((32, 64, 112, 112), 2, 2, 0),
    ((32, 256, 56, 56), 3, 2, 1),
    ((32, 2048, 7, 7), 7, 7, 0),
]


@pytest.mark.parametrize("shape,k,s,p", MAX_CASES, ids=lambda v: str(v))
def test_max_pool2d(compare, shape, k, s, p):
    x = randn(*shape)
    out = F.max_pool2d(x, k, s, p)
    case = f"{'x'.join(map(str, shape))} k{k} s{s} p{p}"
    compare(f"max_pool2d {case}", case, lambda: F.max_pool2d(x, k, s, p), lambda: nbops.max_pool2d(x, k, s, p), nbytes(x, out))


@pytest.mark.parametrize("shape,k,s,p", AVG_CASES, ids=lambda v: str(v))
def test_avg_pool2d(compare, shape, k, s, p):
    x = randn(*shape)
    out = F.avg_pool2d(x, k, s, p)
    case = f"{'x'.join(map(str, shape))} k{k} s{s} p{p}"
    compare(f"avg_pool2d {case}", case, lambda: F.avg_pool2d(x, k, s, p), lambda: nbops.avg_pool2d(x, k, s, p), nbytes(x, out))
