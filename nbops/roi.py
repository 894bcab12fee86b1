"""roi_pool: torchvision's signature, the argument checks and torchvision's bins (computed here, on the
host: a few numbers per box), then the backend's run_roi_pool (nbops/cpu/roi.py, nbops/cuda/roi.py) or,
for an input that requires grad, nbops.autograd."""

from __future__ import annotations

import math

import numpy as np

from ._args import non_negative_pair
from ._arrays import as_array, as_float, host_values, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["roi_pool"]


def _round_half_away(values: np.ndarray) -> np.ndarray:
    """C's round(): halves go away from zero (NumPy's round goes to even)."""
    whole = np.trunc(values)
    return whole + np.where(np.abs(values - whole) >= 0.5, np.sign(values), 0)


def _rois(boxes, dtype) -> np.ndarray:
    """Boxes as Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4] -> an array [K, 5]."""
    if isinstance(boxes, (list, tuple)):
        parts = []
        for index, per_image in enumerate(boxes):
            b = host_values(per_image, f"boxes[{index}]")
            if b.ndim != 2 or b.shape[1] != 4:
                raise ValueError(f"boxes[{index}] must have shape [L, 4], got {tuple(b.shape)}")
            if b.dtype != dtype:
                raise TypeError(f"boxes[{index}] has dtype {b.dtype} but input has dtype {dtype}: they must match")
            parts.append(np.concatenate([np.full((b.shape[0], 1), index, dtype=dtype), b], axis=1))
        return np.concatenate(parts) if parts else np.zeros((0, 5), dtype=dtype)
    rois = host_values(boxes, "boxes")
    if rois.ndim != 2 or rois.shape[1] != 5:
        raise ValueError(
            f"boxes must be a Tensor[K, 5] (batch index, x1, y1, x2, y2) or a list of Tensor[L, 4], "
            f"got shape {tuple(rois.shape)}"
        )
    if rois.dtype != dtype:
        raise TypeError(f"boxes has dtype {rois.dtype} but input has dtype {dtype}: they must match")
    return rois


def _bin_edges(start, length, pooled, limit, dtype):
    """torchvision's bins: [floor(p * size), ceil((p + 1) * size)) + start, size = length / pooled, clipped
    ((K, pooled) each; none for pooled = 0)."""
    bin_size = length.astype(dtype) / dtype.type(max(pooled, 1))
    steps = np.arange(pooled + 1, dtype=dtype)[None, :] * bin_size[:, None]
    low = np.floor(steps[:, :-1]).astype(np.int64) + start[:, None]
    high = np.ceil(steps[:, 1:]).astype(np.int64) + start[:, None]
    return np.clip(low, 0, limit), np.clip(high, 0, limit)


def roi_pool(input, boxes, output_size, spatial_scale=1.0):
    """RoI max pooling, like torchvision.ops.roi_pool.

    Args:
        input (Tensor or ndarray [N, C, H, W]): float32 or float64.
        boxes (Tensor[K, 5] or List[Tensor[L, 4]]): (batch index, x1, y1, x2, y2) in input-image
            coordinates, or one [L, 4] tensor of (x1, y1, x2, y2) per batch element; same dtype as input.
        output_size (int or (h, w)): the pooled size.
        spatial_scale (float): maps box coordinates to the feature map (e.g. 1/16).

    Returns:
        Tensor[K, C, output_size[0], output_size[1]]. Each box's corners are rounded (half away from
        zero) after scaling, a degenerate box counts as 1x1, empty bins give 0. A batch index outside
        [0, N - 1] is an IndexError (torchvision reads out of bounds there).
    """
    grad = grad_wanted(input)
    x, bins = roi_pool_arrays(input, boxes, output_size, spatial_scale)
    if grad:
        return autograd().RoIPool.apply(input, x, bins)
    out, _ = backend("roi").run_roi_pool(x, *bins)
    return wrap(out, input)


def roi_pool_arrays(input, boxes, output_size, spatial_scale):
    """roi_pool's checked arguments: (x, bins) for the backends' run_roi_pool(x, *bins) (also
    nbops/library.py's): bins = (batch_index, h_start, h_end, w_start, w_end), torchvision's bins."""
    x = as_array(input, "input")
    if x.ndim != 4:
        raise ValueError(f"roi_pool: input must be 4-D (N, C, H, W), got shape {tuple(x.shape)}")
    rois = _rois(boxes, x.dtype)
    pooled_h, pooled_w = non_negative_pair(output_size, "output_size")
    scale = as_float(spatial_scale, "spatial_scale")
    if not math.isfinite(scale):
        raise ValueError(f"roi_pool: spatial_scale must be finite, got {scale}")
    if not np.isfinite(rois).all():
        raise ValueError("roi_pool: boxes contain NaN or infinity")
    batch, channels, height, width = x.shape
    batch_index = np.trunc(rois[:, 0]).astype(np.int64)  # torchvision casts the float index to int
    bad = np.flatnonzero((batch_index < 0) | (batch_index >= batch))
    if bad.size:
        k = int(bad[0])
        raise IndexError(
            f"roi_pool: boxes[{k}] has batch index {rois[k, 0]}, outside [0, {batch - 1}] for input with "
            f"batch size {batch}"
        )
    # Corners in the input's dtype, as torchvision computes them; far-away corners are clipped so that the
    # int conversion cannot overflow (they are outside the feature map either way).
    corners = rois[:, 1:] * x.dtype.type(scale)
    corners = np.clip(_round_half_away(corners), -(2**40), 2**40).astype(np.int64)
    x1, y1, x2, y2 = corners.T
    roi_w = np.maximum(x2 - x1 + 1, 1)
    roi_h = np.maximum(y2 - y1 + 1, 1)
    h_start, h_end = _bin_edges(y1, roi_h, pooled_h, height, x.dtype)
    w_start, w_end = _bin_edges(x1, roi_w, pooled_w, width, x.dtype)
    return x, (batch_index, h_start, h_end, w_start, w_end)
