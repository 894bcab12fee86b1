"""Where a checked call goes: the active backend's module of an operator family, or torch autograd.

The fronts (nbops/pooling.py, conv.py, ...) end with one of

    backend("conv").run_conv2d(checked arrays and ints)     # nbops/cpu/conv.py or nbops/cuda/conv.py
    autograd().Conv2d.apply(tensors, checked arrays and ints)   # nbops/autograd.py (CPU backend)

Backend modules are imported on first use (importing one compiles nothing: kernels compile on their
first call); the cuda ones only when the cuda backend runs, so `import nbops` needs no GPU.
"""

from __future__ import annotations

import importlib
import sys

from . import _config

_MODULES: dict = {}


def cpu(family: str):
    """nbops.cpu.<family>: the CPU backend's drivers and kernels of one operator family."""
    module = _MODULES.get(family)
    if module is None:
        module = _MODULES[family] = importlib.import_module(f"nbops.cpu.{family}")
    return module


def cuda(family: str):
    """nbops.cuda.<family>: needs numba.cuda and a GPU (or Numba's simulator), else a clear RuntimeError
    naming what is missing."""
    key = "cuda." + family
    module = _MODULES.get(key)
    if module is None:
        from .cuda import require

        require()
        module = _MODULES[key] = importlib.import_module(f"nbops.cuda.{family}")
    return module


def on_gpu() -> bool:
    """Whether the active backend is 'cuda' (checked after the arguments, before any kernel runs)."""
    backend = _config.backend()
    if backend == "cpu":
        return False
    if backend == "cuda":
        return True
    raise ValueError(f"NBOPS_BACKEND must be 'cpu' or 'cuda', got {backend!r}")


def backend(family: str):
    """The active backend's module of one operator family: its run_<op> functions take checked arrays
    (NumPy views on the CPU; on the cuda backend GPU data comes as _arrays.StandIn) and ints, and return
    arrays of that backend (the front gives them the caller's type with _arrays.wrap)."""
    return cuda(family) if on_gpu() else cpu(family)


def grad_wanted(input, *others) -> bool:
    """Whether this call must go through torch autograd: grad mode is on and an argument is a tensor
    that requires grad. Cheap, and torch-free for NumPy callers (torch is only looked up if imported)."""
    torch = sys.modules.get("torch")
    if torch is None or not torch.is_grad_enabled():
        return False
    for a in (input,) + others:  # (a loop: cheaper than any() over a generator, and this runs on every call)
        if isinstance(a, torch.Tensor) and a.requires_grad:
            break
    else:
        return False
    if on_gpu():
        raise NotImplementedError(
            "gradients are not implemented on the cuda backend yet: train on the cpu backend, or call under torch.no_grad()"
        )
    if not isinstance(input, torch.Tensor):  # the result would be an ndarray, which autograd cannot follow
        raise TypeError(
            f"input must be a torch.Tensor when another argument requires grad, got {type(input).__name__}"
        )
    return True


def autograd():
    """nbops.autograd (imports torch, which a caller with tensors that require grad already has)."""
    from . import autograd

    return autograd
