"""Argument checks and normalisation shared by the public functions (everything a user can get wrong)."""

from __future__ import annotations

import warnings

import numpy as np

from ._arrays import as_int

# Sizes, strides and paddings beyond this are rejected up front: they could only overflow index arithmetic.
MAX_INT = 2**31 - 1
REDUCTIONS = ("none", "mean", "sum")


def pair(value, name: str) -> tuple[int, int]:
    """An int or a sequence of one or two ints -> (height, width)."""
    if type(value) is int and -MAX_INT <= value <= MAX_INT:  # the usual case, first (bool is not int here)
        return (value, value)
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            value = (value[0], value[0])
        elif len(value) != 2:
            raise ValueError(f"{name} must be a single int or a pair of ints, got {value!r}")
        result = (as_int(value[0], name), as_int(value[1], name))
    else:
        result = (as_int(value, name),) * 2
    if max(abs(result[0]), abs(result[1])) > MAX_INT:
        raise ValueError(f"{name} is too large: {result}")
    return result


def positive_pair(value, name: str) -> tuple[int, int]:
    """pair(value), each positive (sizes, strides, dilations)."""
    values = pair(value, name)
    if min(values) <= 0:
        raise ValueError(f"{name} must be positive, got {values}")
    return values


def non_negative_pair(value, name: str) -> tuple[int, int]:
    """pair(value), each at least 0 (paddings)."""
    values = pair(value, name)
    if min(values) < 0:
        raise ValueError(f"{name} must be non-negative, got {values}")
    return values


def check_ndim(shape: tuple, allowed: tuple[int, ...], name: str, what: str) -> None:
    if len(shape) not in allowed:
        raise ValueError(f"{name} must be {what}, got shape {tuple(shape)}")


def pool_output_size(size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool) -> int:
    """torch's pooling_output_shape: floor (or ceil) division, and a ceil window must start inside."""
    numerator = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = numerator // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def reduction_mode(reduction, size_average=None, reduce=None) -> str:
    """torch's reduction string, honouring the deprecated size_average/reduce pair like torch does."""
    if size_average is not None or reduce is not None:
        size_average = True if size_average is None else size_average
        reduce = True if reduce is None else reduce
        reduction = "mean" if (size_average and reduce) else ("sum" if reduce else "none")
        warnings.warn(
            f"size_average and reduce args will be deprecated, please use reduction='{reduction}' instead.",
            UserWarning,
            stacklevel=3,  # the user's call -> the public function -> here
        )
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction
