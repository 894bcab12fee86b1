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


@pytest.mark.parametrize(
    "op,shape,k,s,p",
    [("max_pool2d",) + case for case in MAX_CASES] + [("avg_pool2d",) + case for case in AVG_CASES],
    ids=lambda v: str(v),
)
def test_pool2d(compare, op, shape, k, s, p):
    theirs, ours = getattr(F, op), getattr(nbops, op)
    x = randn(*shape)
    out = theirs(x, k, s, p)
    case = f"{'x'.join(map(str, shape))} k{k} s{s} p{p}"
    compare(f"{op} {case}", case, lambda: theirs(x, k, s, p), lambda: ours(x, k, s, p), nbytes(x, out))
