"""batch_norm: torch's signature, the argument checks, then the backend's run_batch_norm
(nbops/cpu/normalization.py, nbops/cuda/normalization.py) or, for tensors that require grad,
nbops.autograd."""

from __future__ import annotations

import math

from ._arrays import as_array, as_float, same_dtype, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["batch_norm"]


def _channel_vector(value, name, x, channels):
    array = as_array(value, name)
    same_dtype(array, name, x)
    if array.ndim != 1 or array.shape[0] != channels:
        raise ValueError(f"batch_norm: {name} must be 1-D with {channels} elements, got shape {tuple(array.shape)}")
    return array


def batch_norm(input, running_mean, running_var, weight=None, bias=None, training=False, momentum=0.1, eps=1e-05):
    """Batch normalisation, like torch.nn.functional.batch_norm.

    Args:
        input (Tensor or ndarray [N, C] or [N, C, *]): float32 or float64.
        running_mean, running_var ([C] or None): used in evaluation; in training they are updated in
            place, x_new = (1 - momentum) * x + momentum * batch value, with the unbiased batch variance.
        weight, bias ([C], optional): gamma and beta (1 and 0 when absent).
        training: normalise with the batch statistics (biased variance) instead of the running ones.
        momentum, eps: floats; eps >= 0 is added to the variance.

    Returns:
        an array of input's shape: (x - mean) / sqrt(var + eps) * gamma + beta per channel.

    An input without elements (any shape with a 0, 1-D included) gives an empty result and leaves the
    running statistics alone, whatever the other arguments' shapes, as in torch.
    """
    grad = grad_wanted(input, weight, bias)
    x = as_array(input, "input")
    empty = x.size == 0 and x.ndim >= 1
    if x.ndim < 2 and not empty:
        raise ValueError(f"batch_norm: input must have at least 2 dims (N, C, *), got shape {tuple(x.shape)}")
    batch = x.shape[0]
    channels = x.shape[1] if x.ndim >= 2 else 0
    length = math.prod(x.shape[2:])
    if (running_mean is None) != (running_var is None):
        raise ValueError("batch_norm: running_mean and running_var must either both be None or neither be None")
    if not training and running_mean is None and not empty:
        raise ValueError("batch_norm: running_mean and running_var must be given in evaluation mode")
    vectors = {}
    for name, value in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight), ("bias", bias)):
        if value is None:
            vectors[name] = None
        elif empty:  # torch reads none of them: only their types are checked
            vectors[name] = as_array(value, name)
        else:
            vectors[name] = _channel_vector(value, name, x, channels)
    momentum = as_float(momentum, "momentum")
    eps = as_float(eps, "eps")
    if not eps >= 0:
        raise ValueError(f"batch_norm: eps must be non-negative, got {eps}")
    if training and eps == 0:  # torch refuses it too (a constant channel would give 0/0)
        raise ValueError("batch_norm: eps must be positive during training, got 0.0")
    if training and batch * length == 1 and not empty:
        raise ValueError(f"batch_norm: expected more than 1 value per channel when training, got input shape {tuple(x.shape)}")
    if training and not empty:
        for name in ("running_mean", "running_var"):
            if vectors[name] is not None and not vectors[name].flags.writeable:
                raise ValueError(f"batch_norm: {name} is read-only, but training updates it in place")
    x3 = x.reshape(batch, channels, length)
    if empty:  # nothing to normalise and no statistics to update
        args = (None, None, None, None, bool(training), momentum, eps)
    else:
        args = (vectors["running_mean"], vectors["running_var"], vectors["weight"], vectors["bias"], bool(training), momentum, eps)
    if grad:
        return autograd().BatchNorm.apply(input, weight, bias, x3, args)
    out, _, _ = backend("normalization").run_batch_norm(x3, *args)
    return wrap(out.reshape(x.shape), input)
