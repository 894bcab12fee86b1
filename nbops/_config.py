"""Environment variables and Numba threading setup, read in one place.

NBOPS_BACKEND       'cpu' (default) or 'cuda'; read once, at import.
NBOPS_THREADING     'tbb' (default when TBB can be loaded), or any Numba layer name ('omp',
                    'workqueue', 'default'). NUMBA_THREADING_LAYER, when set, always wins.
NUMBA_CACHE_DIR     where compiled kernels are cached; when unset, next to the package, or (when the
                    package directory is read-only, e.g. a system install) a per-user cache directory.
GOMP_SPINCOUNT      read by torch's GNU OpenMP runtime when torch loads; nbops sets it to
                    TORCH_SPINCOUNT at import when torch is not loaded yet and neither it nor
                    OMP_WAIT_POLICY is set (see setup_torch_openmp).

Why tbb: Numba's OpenMP layer kills a fork()ed child that runs a parallel kernel (what a torch
DataLoader worker does) and the workqueue layer aborts when two Python threads run parallel code at
once. TBB survives both, but pip's `tbb` wheel puts libtbb.so.12 in <prefix>/lib, where Numba's
extension does not look, so we load it with RTLD_GLOBAL before Numba's first parallel launch.
"""

from __future__ import annotations

import contextvars
import ctypes
import os
import site
import sys
import tempfile

BACKENDS = ("cpu", "cuda")
BACKEND = os.environ.get("NBOPS_BACKEND", "cpu").strip().lower() or "cpu"  # the process-wide default
REQUESTED_THREADING = os.environ.get("NBOPS_THREADING", "tbb").strip().lower() or "tbb"

# Filled in by setup_threading(): the path of the TBB library we loaded, and why we did not when we did not.
tbb_library: str | None = None
threading_note: str = ""


def _tbb_library_candidates() -> list[str]:
    names = ("libtbb.so.12", "libtbb.12.dylib", "tbb12.dll")
    paths: list[str] = []
    try:
        from importlib import metadata

        for file in metadata.distribution("tbb").files or ():
            if file.name in names:
                paths.append(os.path.realpath(str(file.locate())))
    except Exception:  # tbb not installed as a distribution, or no file list
        pass
    prefixes = [sys.prefix, sys.base_prefix, sys.exec_prefix, getattr(site, "USER_BASE", None) or ""]
    for prefix in prefixes:
        for sub in ("lib", "Library/bin"):
            for name in names:
                paths.append(os.path.join(prefix, sub, name))
    seen: list[str] = []
    for path in paths:
        if path not in seen and os.path.isfile(path):
            seen.append(path)
    return seen


def setup_threading() -> None:
    """Choose Numba's threading layer before any parallel kernel runs (cheap: compiles nothing)."""
    global tbb_library, threading_note
    import numba

    if os.environ.get("NUMBA_THREADING_LAYER"):
        threading_note = "NUMBA_THREADING_LAYER set by the user"
        return
    if REQUESTED_THREADING != "tbb":
        numba.config.THREADING_LAYER = REQUESTED_THREADING
        threading_note = f"NBOPS_THREADING={REQUESTED_THREADING}"
        return
    mode = getattr(os, "RTLD_GLOBAL", 0)
    for path in _tbb_library_candidates():
        try:
            ctypes.CDLL(path, mode=mode)
        except OSError as exc:
            threading_note = f"could not load {path}: {exc}"
            continue
        try:  # the extension Numba will use; importing it only loads a shared library
            import numba.np.ufunc.tbbpool  # noqa: F401
        except ImportError as exc:
            threading_note = f"loaded {path} but Numba's tbb layer failed to import: {exc}"
            return
        tbb_library = path
        numba.config.THREADING_LAYER = "tbb"
        threading_note = f"tbb from {path}"
        return
    threading_note = "TBB not found (pip install tbb); Numba's default layer is not fork- and thread-safe"


# torch's OpenMP workers spin this many times (GNU OpenMP's GOMP_SPINCOUNT) after each parallel region
# before they sleep, instead of libgomp's default 300000 (milliseconds on this machine's cores).
TORCH_SPINCOUNT = "1000"
openmp_note: str = ""  # what setup_torch_openmp() did, and why


def setup_torch_openmp() -> None:
    """Let torch's OpenMP workers go to sleep soon after each torch op, so that they do not keep two
    cores spinning while nbops' kernels run (a converted model alternates torch and nbops ops).

    torch's GNU OpenMP runtime reads GOMP_SPINCOUNT once, when torch loads: nbops sets it here, at
    import, only when torch is not loaded yet and the user set neither GOMP_SPINCOUNT nor
    OMP_WAIT_POLICY. Measured on the 2-core development machine: an nbops op right after a torch op took
    1.5-2x its own time with libgomp's default spin and about its own time with 1000 spins, while
    torch's own ops kept theirs (README, "Sharing the cores with torch"); OMP_WAIT_POLICY=PASSIVE helps
    nbops as much but makes torch's small ops 20-100% slower (each parallel region wakes sleeping
    threads).
    """
    global openmp_note
    if os.environ.get("GOMP_SPINCOUNT") or os.environ.get("OMP_WAIT_POLICY"):
        openmp_note = "GOMP_SPINCOUNT / OMP_WAIT_POLICY as set by the user"
    elif "torch" in sys.modules:
        openmp_note = (
            "torch was imported before nbops: its OpenMP workers spin for libgomp's default time after each torch op "
            f"(import nbops first, or set GOMP_SPINCOUNT={TORCH_SPINCOUNT})"
        )
    else:
        os.environ["GOMP_SPINCOUNT"] = TORCH_SPINCOUNT
        openmp_note = f"GOMP_SPINCOUNT={TORCH_SPINCOUNT} set by nbops before torch loaded"


# Set by setup_cache(): where the kernels are cached ('' = Numba's default, next to the package).
cache_dir: str = ""


def _writable_dir(path: str) -> bool:
    try:
        os.makedirs(path, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path):
            pass
        return True
    except OSError:
        return False


def setup_cache() -> None:
    """Make `cache=True` safe for read-only installs (cheap: compiles nothing).

    Numba caches next to the source file, else in a per-user directory, and raises at the first compile
    when neither is writable (a read-only site-packages with no usable home). If the package directory
    is not writable and NUMBA_CACHE_DIR is unset, nbops picks a writable directory itself.
    """
    global cache_dir
    import numba

    if os.environ.get("NUMBA_CACHE_DIR"):
        cache_dir = os.environ["NUMBA_CACHE_DIR"]
        return
    package_cache = os.path.join(os.path.dirname(os.path.abspath(__file__)), "cpu", "__pycache__")
    if _writable_dir(package_cache):
        return
    user_cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    candidates = [os.path.join(user_cache, "nbops"), os.path.join(tempfile.gettempdir(), f"nbops-cache-{getattr(os, 'getuid', lambda: 0)()}")]
    for candidate in candidates:
        if _writable_dir(candidate):
            numba.config.CACHE_DIR = cache_dir = candidate
            return


# The backend of a block of code (nbops.use_backend): a context variable, so that a block in one thread
# (or asyncio task) does not switch the others. None: the process-wide BACKEND.
_block_backend: contextvars.ContextVar = contextvars.ContextVar("nbops_backend", default=None)


def backend() -> str:
    """The active backend: the innermost nbops.use_backend block's, else the process-wide one."""
    return _block_backend.get() or BACKEND


def check_backend(name) -> str:
    if not isinstance(name, str) or name.strip().lower() not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {name!r}")
    return name.strip().lower()
