"""The cuda backend: the ten operators as numba.cuda kernels, one module per family with the CPU
backend's file names (pooling.py, conv.py, roi.py, activation.py, normalization.py, loss.py).

Imported only when the cuda backend runs an operator: `import nbops` needs neither a GPU nor the CUDA
packages. The fronts (nbops/pooling.py, ...) check and normalise the arguments exactly as for the CPU
(a GPU array is checked through its _arrays.StandIn, with its shape and dtype), then hand them to the
family's `run_*` function here, which has the CPU backend's name and signature, moves data as
_device.py describes and launches the kernels.
"""

from __future__ import annotations


def require():
    """numba.cuda with a usable GPU (or Numba's simulator, NUMBA_ENABLE_CUDASIM=1), else a clear error."""
    try:
        from numba import cuda
    except ImportError as exc:  # pragma: no cover - numba always has numba.cuda or numba-cuda
        raise RuntimeError(
            f"the nbops cuda backend needs numba.cuda (pip install -e '.[cuda]'), which failed to import: {exc}"
        ) from exc
    if not cuda.is_available():
        raise RuntimeError(
            "the nbops cuda backend found no usable CUDA GPU (numba.cuda.is_available() is False: no NVIDIA "
            "driver or device, or the CUDA toolkit libraries are missing; pip install -e '.[cuda]'). "
            "Use the cpu backend, or NUMBA_ENABLE_CUDASIM=1 for Numba's (slow) simulator"
        )
    return cuda
