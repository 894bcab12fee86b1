"""Element-wise activations on the GPU."""

import math

from numba import cuda

from ._device import Place, launch


@cuda.jit(cache=True)
def _sigmoid(x, out, one):
    """out_i = 1 / (1 + exp(-input_i)), in the input's dtype (`one` is 1 in it), as torch computes it."""
    for i in range(cuda.grid(1), x.size, cuda.gridsize(1)):
        out[i] = one / (one + math.exp(-x[i]))


def run_sigmoid(x):
    """sigmoid on the GPU: nbops/cpu/activation.py's run_sigmoid, same argument and result."""
    place = Place(x)
    shape = tuple(x.shape)
    x = place.array(x).reshape(-1)
    out, handle = place.empty(shape, x.dtype)
    launch(_sigmoid, x.size, place, x, out.reshape(-1), x.dtype.type(1))
    return place.give(handle)
