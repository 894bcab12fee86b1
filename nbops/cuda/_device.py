"""Data in and out of the GPU for the cuda backend, and kernel launches.

The run_* functions get the front's checked arguments: GPU data as an _arrays.StandIn (its shape and
dtype, and `source`, the caller's GPU array), host data as a NumPy array.
- A torch CUDA tensor is used in place, through its __cuda_array_interface__ (a non-contiguous one is
  made contiguous by torch first); results are new torch tensors on its device, and the kernels run on
  torch's current stream there, so they order with the caller's torch work without a synchronisation.
- A numba device array is used in place; results are numba device arrays.
- A host array (ndarray, or a CPU tensor's NumPy view) is copied to the GPU; the result comes back as a
  NumPy array, which the front hands back as the caller's type.
"""

from __future__ import annotations

import collections
import math
import sys

import numpy as np
from numba import cuda

from .._arrays import StandIn, is_tensor
from .._arrays import is_device_array as _is_device_array

THREADS = 256  # threads per block (tests lower it so that tiny inputs still span several blocks)
MAX_BLOCKS = 1 << 16  # the kernels loop over the grid (grid-stride loops), so this many blocks suffice
LAUNCHES: collections.Counter = collections.Counter()  # kernel name -> launches: tests check the GPU ran

_STREAMS: dict = {}  # torch stream handle -> numba external stream


def _torch():
    return sys.modules["torch"]


def _torch_dtype(dtype):
    return getattr(_torch(), np.dtype(dtype).name)




def _view(tensor):
    """A numba device array over a contiguous torch CUDA tensor's memory (the tensor stays its owner).
    sync=False: cuda.as_cuda_array would synchronise the tensor's stream on every call, and the kernels
    run on that same stream anyway, after the work that wrote the tensor."""
    return cuda.from_cuda_array_interface(tensor.__cuda_array_interface__, owner=tensor, sync=False)


def source(array):
    """The GPU array behind a checked argument (an _arrays.StandIn), or the host array itself."""
    return array.source if isinstance(array, StandIn) else array


class Place:
    """Where the caller's data lives, judged from the operator's checked input (a StandIn for GPU data,
    else a host NumPy array): where outputs are allocated, which stream the kernels run on, and whether
    results go back to the host."""

    def __init__(self, like):
        data = source(like)
        self.torch_cuda = is_tensor(data) and data.is_cuda
        self.host = not self.torch_cuda and not _is_device_array(data)
        if self.torch_cuda:
            self.device = data.device
            handle = _torch().cuda.current_stream(data.device).cuda_stream
            stream = _STREAMS.get(handle)
            if stream is None:
                stream = _STREAMS[handle] = cuda.external_stream(handle)
            self.stream = stream
        else:
            self.device = None
            self.stream = 0  # the default stream

    def array(self, checked, dtype=None):
        """A checked argument as a C-contiguous device array of `dtype` (default: its own), in its
        checked shape when that has as many elements (x[None] of an unbatched input): the GPU data in
        place when it is already such an array, else a copy."""
        shape = tuple(checked.shape)
        obj = source(checked)
        if is_tensor(obj) and obj.is_cuda:
            tensor = obj.detach()
            if dtype is not None:
                tensor = tensor.to(_torch_dtype(dtype))
            array = _view(tensor.contiguous())
        elif _is_device_array(obj):
            if obj.is_c_contiguous() and (dtype is None or obj.dtype == np.dtype(dtype)):
                array = obj
            else:
                array = cuda.to_device(np.ascontiguousarray(obj.copy_to_host(), dtype=dtype), stream=self.stream)
        else:
            array = cuda.to_device(np.ascontiguousarray(obj, dtype=dtype), stream=self.stream)
        if array.shape != shape and array.size == math.prod(shape):
            array = array.reshape(shape)
        return array

    def broadcast(self, checked, shape, dtype):
        """A checked argument broadcast to `shape` in `dtype`, as a flat C-contiguous device array."""
        shape = tuple(shape)
        if tuple(checked.shape) == shape:
            return self.array(checked, dtype).reshape(-1)
        obj = source(checked)
        if is_tensor(obj) and obj.is_cuda:
            return _view(obj.detach().expand(shape).to(_torch_dtype(dtype)).contiguous()).reshape(-1)
        host = obj.copy_to_host() if _is_device_array(obj) else obj
        expanded = np.ascontiguousarray(np.broadcast_to(np.asarray(host, dtype=dtype), shape))
        return cuda.to_device(expanded, stream=self.stream).reshape(-1)

    def empty(self, shape, dtype):
        """A new output: (the device array the kernels write, the object handed back by give())."""
        shape = tuple(shape)
        if self.torch_cuda:
            tensor = _torch().empty(shape, dtype=_torch_dtype(dtype), device=self.device)
            return _view(tensor), tensor
        array = cuda.device_array(shape, dtype=dtype, stream=self.stream)
        return array, array

    def give(self, handle, shape=None):
        """An output, reshaped to `shape` if given (a 0-d loss is computed in a 1-element array): a torch
        CUDA tensor or a device array where the input was one, a NumPy array for host input (the front
        makes it a tensor if the caller's was one)."""
        if not self.host:
            return handle if shape is None else handle.reshape(shape)
        host = handle.copy_to_host(stream=self.stream)
        self.synchronize()
        return host if shape is None else host.reshape(shape)

    def synchronize(self) -> None:
        if self.stream == 0:
            cuda.synchronize()
        else:
            self.stream.synchronize()

    def write_back(self, checked, array) -> None:
        """Make an argument that the operator updates in place (batch norm's running statistics) hold
        the device array's values, where `array` is a copy rather than that argument's own memory: a
        host array, or a non-contiguous GPU tensor."""
        obj = source(checked)
        if is_tensor(obj) and obj.is_cuda:
            if not obj.is_contiguous():
                obj.copy_(_torch().as_tensor(array, device=obj.device).reshape(obj.shape))
        elif _is_device_array(obj):
            if obj.is_c_contiguous():
                return
            obj.copy_to_device(array.copy_to_host(stream=self.stream).reshape(obj.shape))
        else:
            values = array.copy_to_host(stream=self.stream)
            self.synchronize()
            obj[...] = values.reshape(obj.shape)


def launch(kernel, count: int, place: Place, *args) -> None:
    """Run `kernel` over `count` work items (its grid-stride loop takes what the grid does not cover)."""
    if count <= 0:
        return
    blocks = min(MAX_BLOCKS, (count + THREADS - 1) // THREADS)
    LAUNCHES[kernel.py_func.__name__] += 1
    kernel[blocks, THREADS, place.stream](*args)


def launch_blocks(kernel, blocks: int, threads: int, place: Place, *args) -> None:
    """Run `kernel` with one block per work item (reductions: `threads` is its shared-memory size)."""
    if blocks <= 0:
        return
    LAUNCHES[kernel.py_func.__name__] += 1
    kernel[blocks, threads, place.stream](*args)


def launch_grid(kernel, grid: tuple, block: tuple, place: Place, *args) -> None:
    """Run `kernel` on an explicit grid of blocks (tiled kernels: each block owns one tile)."""
    LAUNCHES[kernel.py_func.__name__] += 1
    kernel[grid, block, place.stream](*args)


@cuda.jit(device=True)
def unravel3(e, d1, d2):
    """Flat index e = (a * d1 + b) * d2 + c of a C-ordered (., d1, d2) array -> (a, b, c)."""
    a = e // (d1 * d2)
    rest = e - a * d1 * d2
    b = rest // d2
    return a, b, rest - b * d2


@cuda.jit(device=True)
def unravel4(e, d1, d2, d3):
    """Flat index e of a C-ordered (., d1, d2, d3) array -> (a, b, c, d)."""
    a = e // (d1 * d2 * d3)
    b, c, d = unravel3(e - a * d1 * d2 * d3, d2, d3)
    return a, b, c, d
