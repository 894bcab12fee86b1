"""flatten: a reshape, with torch's view semantics; no kernel, so no backend module and no autograd
Function (the tensor's own reshape is what autograd and torch.compile follow)."""

from __future__ import annotations

import math

import numpy as np

from ._arrays import as_int, is_tensor, on_gpu
from ._dispatch import on_gpu as backend_is_cuda

__all__ = ["flatten"]


def _wrap_dim(dim, ndim: int, name: str) -> int:
    dim = as_int(dim, name)
    rank = max(ndim, 1)
    if not -rank <= dim < rank:
        raise IndexError(f"{name} out of range (expected to be in range of [{-rank}, {rank - 1}], but got {dim})")
    return dim + rank if dim < 0 else dim


def flatten(input, start_dim=0, end_dim=-1):
    """Flatten dims start_dim..end_dim into one, like torch.flatten.

    Any dtype. Returns a view of input when its strides allow one (a copy otherwise), input itself when
    start_dim == end_dim, and a 1-element 1-D result for a 0-d input.
    """
    if not (isinstance(input, np.ndarray) or is_tensor(input) or (on_gpu(input) and backend_is_cuda())):
        raise TypeError(f"input must be a numpy.ndarray or a torch.Tensor, got {type(input).__name__}")
    shape = tuple(input.shape)
    start = _wrap_dim(start_dim, len(shape), "start_dim")
    end = _wrap_dim(end_dim, len(shape), "end_dim")
    if start > end:
        raise ValueError(f"flatten: start_dim ({start_dim}) cannot come after end_dim ({end_dim})")
    if not shape:
        return input.reshape(1)
    if start == end:
        return input
    merged = math.prod(shape[start : end + 1])
    return input.reshape(shape[:start] + (merged,) + shape[end + 1 :])
