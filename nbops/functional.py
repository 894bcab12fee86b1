"""The ten public operators in one namespace, for `import nbops.functional as F` (the torch habit).

A thin re-export: each function lives in the front of its family (nbops/pooling.py, conv.py, roi.py,
activation.py, reshape.py, normalization.py, loss.py), and `nbops.<name>` is the same function.
"""

from .activation import sigmoid
from .conv import conv2d, conv_transpose2d
from .loss import cross_entropy, mse_loss
from .normalization import batch_norm
from .pooling import avg_pool2d, max_pool2d
from .reshape import flatten
from .roi import roi_pool

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
]
