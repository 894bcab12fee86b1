"""The boundary: NumPy arrays or torch tensors in -> NumPy arrays for the kernels -> the caller's type out.

Nothing here imports torch at module level: `import nbops` and NumPy-only use work without it.
"""

from __future__ import annotations

import operator
import sys

import numpy as np

from . import _config

FLOAT_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT_NAMES = "float32 or float64"


def is_tensor(obj) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.Tensor)


def on_gpu(obj) -> bool:
    """A torch CUDA tensor or a numba device array (anything with __cuda_array_interface__)."""
    if is_tensor(obj):
        return obj.is_cuda
    return is_device_array(obj)


def is_device_array(obj) -> bool:
    """A numba device array (or another GPU array exposing __cuda_array_interface__): not a tensor."""
    if isinstance(obj, np.ndarray) or is_tensor(obj):
        return False
    return bool(getattr(obj, "__cuda_ndarray__", False)) or hasattr(obj, "__cuda_array_interface__")


_TORCH_DTYPES = {"torch.float32": "float32", "torch.float64": "float64", "torch.int64": "int64", "torch.uint8": "uint8",
                 "torch.float16": "float16", "torch.int32": "int32", "torch.bool": "bool"}


class StandIn(np.ndarray):
    """A GPU array seen from the host: its shape and dtype with no memory behind it (every element is
    one zero), and `source`, the GPU array itself (a torch CUDA tensor or a numba device array).

    The fronts check it like any array; the cuda backend reads `source`. Views made of it (x[None], a
    reshape) keep their source, so the backend gets the caller's data in the checked shape.
    """

    source = None

    def __array_finalize__(self, obj):
        self.source = getattr(obj, "source", None)


def shape_only(obj, name: str) -> StandIn:
    """A GPU array's StandIn: what the shared argument checks read, before the cuda backend runs on the
    GPU array itself."""
    if is_tensor(obj):
        if repr(obj.dtype) not in _TORCH_DTYPES:
            raise TypeError(f"{name} has dtype {obj.dtype}, which nbops cannot read")
        dtype = np.dtype(_TORCH_DTYPES[repr(obj.dtype)])
    else:
        dtype = np.dtype(obj.dtype)
    shape = tuple(int(size) for size in obj.shape)
    stand_in = np.lib.stride_tricks.as_strided(np.zeros(1, dtype=dtype), shape, (0,) * len(shape)).view(StandIn)
    stand_in.source = obj
    return stand_in


def as_array(obj, name: str, *, floating: bool = True) -> np.ndarray:
    """A NumPy view of `obj` (no copy for a CPU tensor or an ndarray); dtype checked when `floating`.
    On the cuda backend a GPU array gives its StandIn (the checks need no values)."""
    if isinstance(obj, np.ndarray):
        array = obj
        if not array.dtype.isnative:  # big-endian data: the kernels read native byte order
            array = array.astype(array.dtype.newbyteorder("="))
    elif is_tensor(obj):
        try:  # the usual case, a dense CPU tensor without grad: one call, a view (this runs on every argument)
            array = obj.numpy()
        except (TypeError, RuntimeError):  # torch refuses: a CUDA tensor, or find out why and say it
            if obj.is_cuda and _config.backend() == "cuda":
                array = shape_only(obj, name)
            else:
                array = _tensor_as_array(obj, name, floating)
    elif is_device_array(obj) and _config.backend() == "cuda":
        array = shape_only(obj, name)
    else:
        raise TypeError(f"{name} must be a numpy.ndarray or a torch.Tensor, got {type(obj).__name__}")
    if floating:
        check_float(array, name)
    return array


def host_values(obj, name: str, *, floating: bool = True) -> np.ndarray:
    """as_array, with a GPU array's values copied to the host (small arguments whose values are
    checked or prepared on the host: RoI boxes)."""
    if on_gpu(obj):
        obj = obj.detach().cpu() if is_tensor(obj) else obj.copy_to_host()
    return as_array(obj, name, floating=floating)


def _tensor_as_array(obj, name: str, floating: bool) -> np.ndarray:
    """A NumPy view of a tensor that Tensor.numpy() refused: on another device, not strided, requiring
    grad, with a conjugate or negative bit, or of a dtype without a NumPy twin."""
    if not obj.is_cpu:
        raise RuntimeError(
            f"{name} is on device '{obj.device}', but the nbops cpu backend takes CPU tensors (move it with .cpu(), "
            "or use the cuda backend: nbops.use_backend('cuda'))"
        )
    if obj.layout != sys.modules["torch"].strided:
        raise TypeError(f"{name} must be a dense (strided) tensor, got layout {obj.layout}")
    tensor = obj.detach() if obj.requires_grad else obj
    if tensor.is_conj() or tensor.is_neg():
        tensor = tensor.resolve_conj().resolve_neg()
    try:
        return tensor.numpy()
    except TypeError as exc:  # bfloat16 and friends have no NumPy twin
        if floating:
            raise TypeError(f"{name} must be {_FLOAT_NAMES}, got {obj.dtype}") from exc
        raise TypeError(f"{name} has dtype {obj.dtype}, which nbops cannot read") from exc


def check_float(array: np.ndarray, name: str) -> None:
    if array.dtype not in FLOAT_DTYPES:
        raise TypeError(f"{name} must be {_FLOAT_NAMES}, got {array.dtype}")


def same_dtype(array: np.ndarray, name: str, reference: np.ndarray, reference_name: str = "input") -> None:
    if array.dtype != reference.dtype:
        raise TypeError(
            f"{name} has dtype {array.dtype} but {reference_name} has dtype {reference.dtype}: they must match"
        )


def contiguous(array: np.ndarray) -> np.ndarray:
    """C-contiguous and aligned: what the kernels are compiled for (copies only if needed)."""
    if array.flags.c_contiguous and array.flags.aligned:
        return array
    return np.array(array, order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)


def wrap(result, like):
    """Give a backend's result the caller's type: a host array becomes a torch tensor (sharing memory) if
    `like` is one. A GPU result (torch CUDA tensor, device array) is already the caller's type."""
    if isinstance(result, np.ndarray) and is_tensor(like):
        return sys.modules["torch"].from_numpy(contiguous(result))
    return result


def as_int(value, name: str) -> int:
    if type(value) is int:  # the usual case, first (a bool's type is bool)
        return value
    if isinstance(value, bool) or isinstance(value, (float, np.floating)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}")
    try:
        return operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__} {value!r}") from None


def as_float(value, name: str) -> float:
    if type(value) is float:  # the usual case, first
        return value
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name} must be a float, got {type(value).__name__} {value!r}")
    return float(value)
