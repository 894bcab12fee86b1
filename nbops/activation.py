"""sigmoid: torch's signature, the argument check, then the backend's run_sigmoid (nbops/cpu/activation.py,
nbops/cuda/activation.py) or, for a tensor that requires grad, nbops.autograd."""

from __future__ import annotations

from ._arrays import as_array, wrap
from ._dispatch import autograd, backend, grad_wanted

__all__ = ["sigmoid"]


def sigmoid(input):
    """out_i = 1 / (1 + exp(-input_i)), like torch.sigmoid: any shape, float32 or float64."""
    if grad_wanted(input):
        return autograd().Sigmoid.apply(input, as_array(input, "input"))
    return wrap(backend("activation").run_sigmoid(as_array(input, "input")), input)
