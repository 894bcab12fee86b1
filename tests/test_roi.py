import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torchvision.ops import roi_pool as tv_roi_pool

import nbops
from reference import DTYPES, assert_same, distinct, non_contiguous


def _boxes(count, height, width, batch, dtype, seed=0, scale=1.0):
    g = torch.Generator().manual_seed(seed)
    xs = torch.rand(count, 2, generator=g, dtype=torch.float64) * (width + 4) / scale - 2 / scale
    ys = torch.rand(count, 2, generator=g, dtype=torch.float64) * (height + 4) / scale - 2 / scale
    idx = torch.randint(0, batch, (count, 1), generator=g).to(torch.float64)
    rois = torch.cat([idx, xs[:, :1], ys[:, :1], xs[:, 1:], ys[:, 1:]], dim=1)  # some boxes inverted
    return rois.to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("output_size", [1, 2, (3, 2), 7, (5, 9)])
@pytest.mark.parametrize("spatial_scale", [1.0, 0.5, 1 / 16, 0.3])
def test_roi_pool_matches_torchvision(output_size, spatial_scale, dtype):
    x = distinct((2, 3, 12, 15), dtype)
    rois = _boxes(20, 12, 15, 2, dtype, scale=spatial_scale)
    expected = tv_roi_pool(x, rois, output_size, spatial_scale)
    assert_same(nbops.roi_pool(x, rois, output_size, spatial_scale), expected, dict(rtol=0, atol=0))
    kw = dict(boxes=rois, output_size=output_size, spatial_scale=spatial_scale)
    assert_same(nbops.roi_pool(input=x, **kw), expected, dict(rtol=0, atol=0))


def test_roi_pool_box_list_and_layouts():
    x = distinct((2, 4, 10, 10))
    per_image = [_boxes(5, 10, 10, 1, torch.float32, seed=1)[:, 1:], _boxes(3, 10, 10, 1, torch.float32, seed=2)[:, 1:]]
    expected = tv_roi_pool(x, per_image, (2, 3), 1.0)
    assert_same(nbops.roi_pool(x, per_image, (2, 3)), expected, dict(rtol=0, atol=0))
    for variant in (non_contiguous(x), x.contiguous(memory_format=torch.channels_last)):
        assert_same(nbops.roi_pool(variant, per_image, 2), tv_roi_pool(variant, per_image, 2), dict(rtol=0, atol=0))
    rois = _boxes(6, 10, 10, 2, torch.float32)
    out = nbops.roi_pool(x.numpy(), rois.numpy(), 3)
    assert isinstance(out, np.ndarray)
    np.testing.assert_array_equal(out, tv_roi_pool(x, rois, 3).numpy())


def test_roi_pool_rounding_halves_and_degenerate_boxes():
    x = distinct((1, 2, 9, 9), torch.float64)
    rois = torch.tensor(
        [
            [0, 0.5, 0.5, 4.5, 4.5],  # halves round away from zero
            [0, 1.5, 2.5, 3.5, 6.5],
            [0, -0.5, -1.5, 2.5, 2.5],
            [0, 5.0, 5.0, 2.0, 2.0],  # inverted: counts as 1x1
            [0, 3.0, 3.0, 3.0, 3.0],  # a point
            [0, 20.0, 20.0, 30.0, 30.0],  # outside the map: empty bins give 0
            [0, -30.0, -30.0, -20.0, -20.0],
            [0.9, 0, 0, 8, 8],  # batch index truncated like torchvision
        ],
        dtype=torch.float64,
    )
    for output_size in (1, 2, 4, (3, 5)):
        assert_same(nbops.roi_pool(x, rois, output_size), tv_roi_pool(x, rois, output_size), dict(rtol=0, atol=0))


def test_roi_pool_nan_and_inf_values_like_torchvision():
    x = distinct((1, 1, 6, 6))
    x[0, 0, 1, 1] = float("nan")
    x[0, 0, 4, 4] = float("inf")
    x[0, 0, 0, 5] = -float("inf")
    rois = torch.tensor([[0, 0, 0, 5, 5], [0, 0, 0, 2, 2], [0, 1, 1, 1, 1], [0, 5, 0, 5, 0]], dtype=torch.float32)
    assert_same(nbops.roi_pool(x, rois, 2), tv_roi_pool(x, rois, 2), dict(rtol=0, atol=0))
    assert_same(nbops.roi_pool(x, rois, 1), tv_roi_pool(x, rois, 1), dict(rtol=0, atol=0))


def test_roi_pool_empty_boxes_and_sizes():
    x = distinct((2, 3, 8, 8))
    empty = torch.zeros(0, 5)
    assert_same(nbops.roi_pool(x, empty, 2), tv_roi_pool(x, empty, 2))
    rois = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
    assert_same(nbops.roi_pool(x, rois, 0), tv_roi_pool(x, rois, 0))
    out = nbops.roi_pool(x, [], 2)
    assert out.shape == (0, 3, 2, 2)


@given(
    n=st.integers(1, 3),
    c=st.integers(1, 3),
    h=st.integers(1, 12),
    w=st.integers(1, 12),
    k=st.integers(0, 12),
    ph=st.integers(1, 6),
    pw=st.integers(1, 6),
    scale=st.sampled_from([1.0, 0.5, 0.25, 1 / 16, 0.7, 2.0]),
    seed=st.integers(0, 1000),
    double=st.booleans(),
)
def test_roi_pool_property(n, c, h, w, k, ph, pw, scale, seed, double):
    dtype = torch.float64 if double else torch.float32
    x = distinct((n, c, h, w), dtype, seed=seed)
    rois = _boxes(k, h, w, n, dtype, seed=seed, scale=scale)
    expected = tv_roi_pool(x, rois, (ph, pw), scale)
    assert_same(nbops.roi_pool(x, rois, (ph, pw), scale), expected, dict(rtol=0, atol=0))


def test_roi_pool_bad_arguments():
    x = torch.zeros(2, 3, 8, 8)
    good = torch.tensor([[0, 1.0, 1.0, 5.0, 5.0]])
    with pytest.raises(IndexError, match="batch index"):
        nbops.roi_pool(x, torch.tensor([[2, 1.0, 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(IndexError, match="batch index"):
        nbops.roi_pool(x, torch.tensor([[-1, 1.0, 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="NaN"):
        nbops.roi_pool(x, torch.tensor([[0, float("nan"), 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match="NaN or infinity"):
        nbops.roi_pool(x, torch.tensor([[0, 1.0, float("inf"), 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match=r"Tensor\[K, 5\]"):
        nbops.roi_pool(x, torch.tensor([[1.0, 1.0, 5.0, 5.0]]), 2)
    with pytest.raises(ValueError, match=r"Tensor\[K, 5\]"):
        nbops.roi_pool(x, torch.tensor([0, 1.0, 1.0, 5.0, 5.0]), 2)
    with pytest.raises(ValueError, match=r"boxes\[0\]"):
        nbops.roi_pool(x, [torch.tensor([[1.0, 1.0, 5.0]])], 2)
    with pytest.raises(TypeError, match="boxes"):
        nbops.roi_pool(x, good.double(), 2)
    with pytest.raises(TypeError, match=r"boxes\[1\]"):
        nbops.roi_pool(x, [good[:, 1:], good[:, 1:].double()], 2)
    with pytest.raises(ValueError, match="4-D"):
        nbops.roi_pool(x[0], good, 2)
    with pytest.raises(ValueError, match="output_size"):
        nbops.roi_pool(x, good, -1)
    with pytest.raises(TypeError, match="output_size"):
        nbops.roi_pool(x, good, 2.5)
    with pytest.raises(ValueError, match="spatial_scale"):
        nbops.roi_pool(x, good, 2, float("nan"))
    with pytest.raises(TypeError, match="spatial_scale"):
        nbops.roi_pool(x, good, 2, "1")
    with pytest.raises(TypeError, match="float32 or float64"):
        nbops.roi_pool(x.long(), good.long(), 2)
    with pytest.raises(TypeError, match="boxes"):
        nbops.roi_pool(x, "boxes", 2)
