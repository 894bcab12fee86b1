"""cross_entropy and mse_loss: torch's signatures, the argument checks, then the backend's run_<op>
(nbops/cpu/loss.py, nbops/cuda/loss.py) or, for tensors that require grad, nbops.autograd."""

from __future__ import annotations

import math
import warnings

import numpy as np

from ._args import reduction_mode
from ._arrays import as_array, as_float, as_int, same_dtype, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["cross_entropy", "mse_loss"]


def cross_entropy(
    input,
    target,
    weight=None,
    size_average=None,
    ignore_index=-100,
    reduce=None,
    reduction="mean",
    label_smoothing=0.0,
):
    """Cross entropy between logits and targets, like torch.nn.functional.cross_entropy.

    Args:
        input (Tensor or ndarray [C], [N, C] or [N, C, d1, ..., dk]): unnormalised logits, float32/float64.
        target: class indices (int64 or uint8) of shape [], [N] or [N, d1, ..., dk], each in [0, C) or
            equal to ignore_index; or class probabilities of input's shape (floating).
        weight ([C], optional): a rescaling weight per class.
        ignore_index (int): a class-index target that contributes nothing (not for probability targets).
        reduction: 'none' | 'mean' | 'sum'. The mean of class-index targets divides by the sum of the
            targets' weights; of probability targets, by the number of positions.
        label_smoothing (float in [0, 1]): mixes the target with the uniform distribution.
        size_average, reduce: deprecated, as in torch.

    Returns:
        a 0-d array, or for 'none' the per-position losses (target's shape without the class dim).
    """
    grad = grad_wanted(input, target, weight)
    x, t, w, args = cross_entropy_arrays(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing)
    if grad:
        return autograd().CrossEntropy.apply(input, target, weight, x, t, w, args)
    return wrap(backend("loss").run_cross_entropy(x, t, w, *args), input)


def cross_entropy_arrays(input, target, weight, size_average, ignore_index, reduce, reduction, label_smoothing):
    """cross_entropy's checked arguments: (x, t, w, args) for the backends' run_cross_entropy(x, t, w,
    *args) and its backward pass (also nbops/library.py's)."""
    reduction = reduction_mode(reduction, size_average, reduce)
    x = as_array(input, "input")
    t = as_array(target, "target", floating=False)
    if x.ndim == 0:
        raise ValueError("cross_entropy: input must have at least 1 dim (C), (N, C) or (N, C, d1, ...), got a 0-d input")
    smoothing = as_float(label_smoothing, "label_smoothing")
    if not smoothing <= 1.0:
        raise ValueError(f"cross_entropy: label_smoothing must be between 0.0 and 1.0, got {smoothing}")
    smoothing = max(smoothing, 0.0)  # torch treats a negative value as no smoothing
    ignore_index = as_int(ignore_index, "ignore_index")
    classes = x.shape[0] if x.ndim == 1 else x.shape[1]
    w = None
    if weight is not None:
        w = as_array(weight, "weight")
        same_dtype(w, "weight", x)
        if w.shape != (classes,):
            raise ValueError(f"cross_entropy: weight must be 1-D with {classes} elements (C), got shape {tuple(w.shape)}")
    # (C,) is one sample; (N, C, d1, ..., dk) is N samples at L = d1 * ... * dk positions.
    batch = 1 if x.ndim == 1 else x.shape[0]
    spatial = tuple(x.shape[2:])
    length = math.prod(spatial)
    out_shape = () if x.ndim == 1 else (batch,) + spatial

    if t.shape == x.shape:  # class probabilities
        if t.dtype.kind != "f":
            raise TypeError(f"cross_entropy: a target of input's shape holds class probabilities and must be floating, got {t.dtype}")
        if ignore_index >= 0:
            raise ValueError("cross_entropy: ignore_index is not supported for class-probability targets")
        dtype = np.result_type(x.dtype, t.dtype)  # float32 or float64: x is one of them
        args = ((batch, classes, length), out_shape, reduction, smoothing, None, dtype)
    else:  # class indices
        if t.dtype not in (np.dtype(np.int64), np.dtype(np.uint8)):
            raise TypeError(f"cross_entropy: class-index target must be int64 or uint8, got {t.dtype}")
        if t.shape != out_shape:
            if x.ndim >= 2 and (t.ndim == 0 or t.shape[0] != batch):
                raise ValueError(
                    f"cross_entropy: expected input batch_size ({batch}) to match target batch_size "
                    f"({t.shape[0] if t.ndim else 'none: 0-d target'})"
                )
            raise ValueError(f"cross_entropy: target must have shape {out_shape} for input of shape {tuple(x.shape)}, got {tuple(t.shape)}")
        args = ((batch, classes, length), out_shape, reduction, smoothing, ignore_index, x.dtype)
    return x, t, w, args


def mse_loss(input, target, size_average=None, reduce=None, reduction="mean", weight=None):
    """Mean squared error, like torch.nn.functional.mse_loss.

    Args:
        input, target (Tensor or ndarray, any shapes that broadcast): float32 or float64 (the result has
            the promoted dtype). Differing shapes warn, as in torch.
        reduction: 'none' | 'mean' | 'sum'; size_average, reduce: deprecated, as in torch.
        weight (optional, input's shape): l_n = weight_n * (x_n - y_n)^2; the weighted mean divides by
            sum(weight).

    Returns:
        a 0-d array, or for 'none' the element-wise losses in the broadcast shape.
    """
    grad = grad_wanted(input, target, weight)
    x, y, w, args = mse_loss_arrays(input, target, size_average, reduce, reduction, weight)
    if grad:
        return autograd().MSELoss.apply(input, target, weight, x, y, w, args)
    return wrap(backend("loss").run_mse_loss(x, y, w, *args), input)


def mse_loss_arrays(input, target, size_average, reduce, reduction, weight):
    """mse_loss's checked arguments: (x, y, w, args) for the backends' run_mse_loss(x, y, w, *args) and
    its backward pass (also nbops/library.py's)."""
    reduction = reduction_mode(reduction, size_average, reduce)
    x = as_array(input, "input")
    y = as_array(target, "target")
    if x.shape == y.shape:
        shape = x.shape
    else:
        try:
            shape = np.broadcast_shapes(x.shape, y.shape)
        except ValueError:
            raise ValueError(
                f"mse_loss: target of shape {tuple(y.shape)} does not broadcast with input of shape {tuple(x.shape)}"
            ) from None
        warnings.warn(
            f"Using a target size ({tuple(y.shape)}) that is different to the input size ({tuple(x.shape)}). "
            "This will likely lead to incorrect results due to broadcasting. "
            "Please ensure they have the same size.",
            UserWarning,
            stacklevel=3,  # the user's call -> the public function -> here
        )
    dtypes = [x.dtype, y.dtype]
    w = None
    if weight is not None:
        w = as_array(weight, "weight")
        if w.shape != x.shape:
            raise ValueError(f"mse_loss: weight must have input's shape {tuple(x.shape)}, got {tuple(w.shape)}")
        dtypes.append(w.dtype)
    dtype = dtypes[0] if all(d == dtypes[0] for d in dtypes) else np.result_type(*dtypes)
    return x, y, w, (shape, dtype, reduction)
