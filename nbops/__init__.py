"""nbops: PyTorch's core CNN operators as explicit nested loops compiled by Numba.

Drop-in replacements for their torch / torchvision twins, same names, signatures and results:

    import nbops
    y = nbops.conv2d(x, weight, bias, stride=2, padding=1)   # x: torch tensor or NumPy array

Importing nbops compiles nothing: each kernel compiles on its first call and is cached on disk.
The backend comes from NBOPS_BACKEND ('cpu', the default).
"""

import contextlib

from . import _config

_config.setup_threading()
_config.setup_cache()
_config.setup_torch_openmp()

# (E402: the threading layer must be chosen before any kernel exists)
from .activation import sigmoid  # noqa: E402
from .conv import conv2d, conv_transpose2d  # noqa: E402
from .loss import cross_entropy, mse_loss  # noqa: E402
from .normalization import batch_norm  # noqa: E402
from .pooling import avg_pool2d, max_pool2d  # noqa: E402
from .reshape import flatten  # noqa: E402
from .roi import roi_pool  # noqa: E402

__version__ = "0.1.0"


def get_backend() -> str:
    """The backend the operators run on now: 'cpu' or 'cuda'."""
    return _config.backend()


def set_backend(name: str) -> None:
    """Make `name` ('cpu' or 'cuda') the backend of the whole process (NBOPS_BACKEND sets it at import).
    Nothing is checked or loaded here: a missing GPU is a clear error at the first call."""
    _config.BACKEND = _config.check_backend(name)


@contextlib.contextmanager
def use_backend(name: str):
    """Run a block of code on backend `name`: `with nbops.use_backend("cuda"): ...` (this thread only)."""
    token = _config._block_backend.set(_config.check_backend(name))
    try:
        yield
    finally:
        _config._block_backend.reset(token)


__all__ = [
    "max_pool2d",
    "avg_pool2d",
    "conv2d",
    "conv_transpose2d",
    "flatten",
    "sigmoid",
    "roi_pool",
    "batch_norm",
    "cross_entropy",
    "mse_loss",
    "get_backend",
    "set_backend",
    "use_backend",
    "__version__",
]

# (last: registering the torch custom operators imports the package's own names, use_backend too)
from ._torch_ops import register_when_torch_is_there  # noqa: E402

register_when_torch_is_there()  # torch.ops.nbops: now if torch is imported, else right after it is
