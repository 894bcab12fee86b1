import numpy as np
import pytest
import torch

import nbops
from reference import DTYPES, assert_same, non_contiguous, randn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 5), (2, 3, 4, 5), (0, 3), (1000003,)])
def test_sigmoid_matches_torch(shape, dtype):
    x = randn(shape, dtype) * 10
    assert_same(nbops.sigmoid(x), torch.sigmoid(x))
    assert_same(nbops.sigmoid(input=x), torch.sigmoid(x))


@pytest.mark.parametrize("dtype", DTYPES)
def test_sigmoid_extremes_are_stable(dtype):
    info = torch.finfo(dtype)
    x = torch.tensor([0.0, -0.0, 1e-30, -1e-30, 20, -20, 80, -80, 89, -89, 100, -100, 700, -700, 746, -746,
                      1e4, -1e4, info.max, -info.max, float("inf"), -float("inf"), float("nan")], dtype=dtype)
    with np.errstate(all="raise"):  # no overflow / invalid warnings from the kernel's arithmetic
        out = nbops.sigmoid(x)
    assert_same(out, torch.sigmoid(x))
    assert out[-3] == 1.0 and out[-2] == 0.0 and torch.isnan(out[-1])
    assert out[x > 0].le(1).all() and out[x < 0].ge(0).all()


def test_sigmoid_layouts_numpy_and_dtypes():
    x = randn((4, 6, 5, 5))
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last), x.t() if x.ndim == 2 else x[:, ::2]):
        assert_same(nbops.sigmoid(variant), torch.sigmoid(variant))
    out = nbops.sigmoid(x.numpy())
    assert isinstance(out, np.ndarray) and out.dtype == np.float32
    np.testing.assert_allclose(out, torch.sigmoid(x).numpy(), rtol=1e-6)
    before = x.clone()
    nbops.sigmoid(x)
    assert torch.equal(x, before)
    for bad in (torch.tensor([1, 2]), torch.tensor([True]), torch.tensor([1.0], dtype=torch.float16),
                torch.tensor([1.0], dtype=torch.bfloat16), np.array([1, 2])):
        with pytest.raises(TypeError, match="float32 or float64"):
            nbops.sigmoid(bad)
    with pytest.raises(TypeError, match="input"):
        nbops.sigmoid([1.0, 2.0])


FLATTEN_CASES = [
    ((2, 3, 4, 5), 0, -1),
    ((2, 3, 4, 5), 1, -1),
    ((2, 3, 4, 5), 1, 2),
    ((2, 3, 4, 5), -3, -2),
    ((2, 3, 4, 5), 2, 2),
    ((2, 3, 4, 5), 0, 0),
    ((2, 0, 4), 0, 1),
    ((5,), 0, 0),
    ((), 0, -1),
    ((), -1, 0),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.int64, torch.uint8, torch.bool, torch.float16])
@pytest.mark.parametrize("shape,start,end", FLATTEN_CASES)
def test_flatten_matches_torch(shape, start, end, dtype):
    x = (torch.arange(int(np.prod(shape))) % 7).to(dtype).reshape(shape)
    expected = torch.flatten(x, start, end)
    out = nbops.flatten(x, start, end)
    assert out.shape == expected.shape and out.dtype == expected.dtype
    assert torch.equal(out, expected)
    assert torch.equal(nbops.flatten(input=x, start_dim=start, end_dim=end), expected)
    # numpy in, numpy out, same values
    out_np = nbops.flatten(x.numpy(), start, end)
    assert isinstance(out_np, np.ndarray)
    np.testing.assert_array_equal(out_np, expected.numpy())


def test_flatten_is_a_view_when_possible():
    x = torch.arange(24.0).reshape(2, 3, 4)
    out = nbops.flatten(x, 1)
    assert out.data_ptr() == x.data_ptr()
    out[0, 0] = 100.0  # writes through, like torch's view
    assert x[0, 0, 0] == 100.0
    assert nbops.flatten(x, 1, 1) is x
    a = np.arange(24.0).reshape(2, 3, 4)
    assert np.shares_memory(nbops.flatten(a), a)
    # a transposed input cannot be viewed flat: a copy with torch's values
    t = x.transpose(0, 2)
    out = nbops.flatten(t)
    assert torch.equal(out, torch.flatten(t))
    assert out.data_ptr() != t.data_ptr()
    assert torch.equal(nbops.flatten(t, 1, 2), torch.flatten(t, 1, 2))


def test_flatten_bad_arguments():
    x = torch.zeros(2, 3, 4, 5)
    with pytest.raises(IndexError, match="start_dim"):
        nbops.flatten(x, 4)
    with pytest.raises(IndexError, match="end_dim"):
        nbops.flatten(x, 0, -5)
    with pytest.raises(IndexError, match=r"\[-1, 0\]"):
        nbops.flatten(torch.tensor(1.0), 1)
    with pytest.raises(ValueError, match="cannot come after"):
        nbops.flatten(x, 2, 1)
    with pytest.raises(TypeError, match="start_dim"):
        nbops.flatten(x, 1.0)
    with pytest.raises(TypeError, match="input"):
        nbops.flatten([1, 2, 3])
