"""Parallel kernels that run serially when the work is small.

A `prange` loop hands its iterations to Numba's worker threads, and waking them costs 10 to 40
microseconds on the development machine (they sleep between calls): more than a small op's whole
work. torch does the same thing for the same reason (a grain size below which ATen stays on the
calling thread). `@parallel_kernel(...)` compiles one Python function twice, as
`njit(parallel=True, ...)` and as a serial `njit(...)` twin in which `prange` is a plain `range`, and
calling the result picks one:

    serial   when the array arguments hold fewer than SERIAL_BELOW elements in all,
    parallel otherwise.

Both versions run the same source, so they give the same results (the kernels' reductions are
blocked independently of the thread count). Each compiles on its first use only, and each has its own
on-disk cache entry (the twin has its own qualified name). Kernels that other compiled code calls use
`.parallel` or `.serial` directly; a Python caller that knows the work better than the element count
can do the same.
"""

from __future__ import annotations

import types

import numpy as np
from numba import njit

SERIAL_BELOW = 1 << 16  # elements (256 KB of float32): below this a kernel runs on the calling thread


def _twin(py_func, suffix: str):
    """A copy of `py_func` under another name: Numba keys its on-disk cache by the qualified name."""
    twin = types.FunctionType(
        py_func.__code__, py_func.__globals__, py_func.__name__ + suffix, py_func.__defaults__, py_func.__closure__
    )
    twin.__qualname__ = py_func.__qualname__ + suffix
    twin.__module__ = py_func.__module__
    twin.__doc__ = py_func.__doc__
    return twin


class ParallelKernel:
    """A kernel compiled both ways; calling it picks by the element count of its array arguments."""

    def __init__(self, py_func, options: dict):
        self.py_func = py_func
        self.parallel = njit(parallel=True, **options)(py_func)
        self.serial = njit(**options)(_twin(py_func, "__serial"))
        self.__name__ = py_func.__name__
        self.__qualname__ = py_func.__qualname__
        self.__doc__ = py_func.__doc__

    def pick(self, work: int):
        """The version for `work` elements."""
        return self.serial if work < SERIAL_BELOW else self.parallel

    def __call__(self, *args):
        work = 0
        for arg in args:
            if isinstance(arg, np.ndarray):
                work += arg.size
        return self.pick(work)(*args)

    def __repr__(self):
        return f"<ParallelKernel {self.__qualname__}>"


@njit(cache=True, inline="always")
def unravel3(task, d1, d2):
    """A flat task index task = (a * d1 + b) * d2 + c of a prange over a (., d1, d2) grid -> (a, b, c)."""
    a = task // (d1 * d2)
    rest = task - a * d1 * d2
    b = rest // d2
    return a, b, rest - b * d2


def parallel_kernel(**options):
    """Decorator: `@parallel_kernel(cache=True, ...)` in place of `@njit(parallel=True, cache=True, ...)`."""

    def wrap(py_func) -> ParallelKernel:
        return ParallelKernel(py_func, options)

    return wrap
