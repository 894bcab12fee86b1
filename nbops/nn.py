"""nn modules whose forward passes run on nbops: drop-in twins of torch.nn / torchvision.ops modules.

Each class subclasses its torch twin and replaces only `forward`, so constructor arguments, parameters,
buffers, initialisation, `state_dict` keys, `repr` and `isinstance` checks are torch's own: a state_dict
loads either way, and a model can swap one for the other. The computation, forward and backward (through
nbops.autograd), is nbops'.

    import nbops.nn as nnb
    model = torch.nn.Sequential(nnb.Conv2d(1, 8, 3, padding=1), nnb.BatchNorm2d(8), nnb.Sigmoid())

Importing this module imports torch (and torchvision for RoIPool); `import nbops` does not.
"""

from __future__ import annotations

import torch
from torch import nn

from . import functional as F
from . import library  # noqa: F401  (registers torch.ops.nbops, which the modules call while traced)
from .conv import same_padding

try:  # torchvision's RoIPool is the twin when torchvision is there
    from torchvision.ops import RoIPool as _TorchRoIPool
except ImportError:  # pragma: no cover - torchvision is a test dependency

    class _TorchRoIPool(nn.Module):
        def __init__(self, output_size, spatial_scale: float):
            super().__init__()
            self.output_size = output_size
            self.spatial_scale = spatial_scale

        def __repr__(self) -> str:
            return f"{self.__class__.__name__}(output_size={self.output_size}, spatial_scale={self.spatial_scale})"


__all__ = [
    "convert",
    "Conv2d",
    "ConvTranspose2d",
    "MaxPool2d",
    "AvgPool2d",
    "BatchNorm1d",
    "BatchNorm2d",
    "Flatten",
    "Sigmoid",
    "CrossEntropyLoss",
    "MSELoss",
    "RoIPool",
]


def _traced() -> bool:
    """Whether torch.compile or torch.export is tracing the module: then the registered modules call
    nbops' torch custom operators (nbops/library.py), which tracing sees through; eager calls keep the
    direct path, which costs less per call."""
    return torch.compiler.is_compiling()


class Conv2d(nn.Conv2d):
    """torch.nn.Conv2d computed by nbops.conv2d. padding_mode other than 'zeros' ('reflect',
    'replicate', 'circular') pads with torch.nn.functional.pad first, as torch.nn.Conv2d does."""

    def _conv_forward(self, input, weight, bias):
        padding = self.padding
        if self.padding_mode != "zeros":
            input = nn.functional.pad(input, self._reversed_padding_repeated_twice, mode=self.padding_mode)
            padding = 0
        if _traced():
            if isinstance(padding, str):  # 'valid' or 'same' as ints, or as zeros added first where uneven
                input, padding = _string_padding(input, padding, weight.shape[2:], self.dilation)
            return torch.ops.nbops.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)
        return F.conv2d(input, weight, bias, self.stride, padding, self.dilation, self.groups)


def _string_padding(input, padding, kernel, dilation):
    """(input, int padding) for conv2d's padding='valid' or 'same' (stride 1), whose op takes one padding
    for both sides: where 'same' pads more after than before (nbops.conv.same_padding), the difference
    is added to the input first (zeros), the rest stays the op's padding."""
    if padding == "valid":
        return input, (0, 0)
    before, after = same_padding(kernel, dilation)
    if after != before:
        input = nn.functional.pad(input, (0, after[1] - before[1], 0, after[0] - before[0]))
    return input, before


class ConvTranspose2d(nn.ConvTranspose2d):
    """torch.nn.ConvTranspose2d computed by nbops.conv_transpose2d (output_size picks output_padding,
    as in torch)."""

    def forward(self, input, output_size=None):
        if self.padding_mode != "zeros":
            raise ValueError("Only `zeros` padding mode is supported for ConvTranspose2d")
        output_padding = self._output_padding(
            input, output_size, self.stride, self.padding, self.kernel_size, 2, self.dilation
        )
        args = (self.weight, self.bias, self.stride, self.padding, output_padding, self.groups, self.dilation)
        if _traced():
            return torch.ops.nbops.conv_transpose2d(input, *args)
        return F.conv_transpose2d(input, *args)


class MaxPool2d(nn.MaxPool2d):
    """torch.nn.MaxPool2d computed by nbops.max_pool2d."""

    def forward(self, input):
        if _traced():  # (torch's module has made stride the kernel size where it was not given)
            op = torch.ops.nbops.max_pool2d_with_indices if self.return_indices else torch.ops.nbops.max_pool2d
            return op(input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode)
        return F.max_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.dilation, self.ceil_mode, self.return_indices
        )


class AvgPool2d(nn.AvgPool2d):
    """torch.nn.AvgPool2d computed by nbops.avg_pool2d."""

    def forward(self, input):
        avg_pool2d = torch.ops.nbops.avg_pool2d if _traced() else F.avg_pool2d
        return avg_pool2d(
            input, self.kernel_size, self.stride, self.padding, self.ceil_mode, self.count_include_pad,
            self.divisor_override,
        )


class _BatchNorm:
    """The forward pass of torch's batch norm modules, on nbops.batch_norm: batch statistics in
    training (updating the running ones when tracked, by `momentum` or, when it is None, by a
    cumulative average over num_batches_tracked), the running statistics in evaluation when tracked."""

    def forward(self, input):
        self._check_input_dim(input)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_statistics = self.training or (self.running_mean is None and self.running_var is None)
        tracked = not self.training or self.track_running_stats
        running = (self.running_mean, self.running_var) if tracked else (None, None)
        batch_norm = torch.ops.nbops.batch_norm if _traced() else F.batch_norm
        return batch_norm(input, *running, self.weight, self.bias, use_batch_statistics, momentum, self.eps)


class BatchNorm1d(_BatchNorm, nn.BatchNorm1d):
    """torch.nn.BatchNorm1d computed by nbops.batch_norm: (N, C) or (N, C, L) input."""


class BatchNorm2d(_BatchNorm, nn.BatchNorm2d):
    """torch.nn.BatchNorm2d computed by nbops.batch_norm: (N, C, H, W) input."""


class Flatten(nn.Flatten):
    """torch.nn.Flatten through nbops.flatten (a view where the strides allow one)."""

    def forward(self, input):
        return F.flatten(input, self.start_dim, self.end_dim)


class Sigmoid(nn.Sigmoid):
    """torch.nn.Sigmoid computed by nbops.sigmoid."""

    def forward(self, input):
        if _traced():
            return torch.ops.nbops.sigmoid(input)
        return F.sigmoid(input)


class CrossEntropyLoss(nn.CrossEntropyLoss):
    """torch.nn.CrossEntropyLoss computed by nbops.cross_entropy (weight, ignore_index, reduction and
    label_smoothing as given to the constructor)."""

    def forward(self, input, target):
        if _traced():
            return torch.ops.nbops.cross_entropy(
                input, target, self.weight, self.ignore_index, self.reduction, self.label_smoothing
            )
        return F.cross_entropy(
            input, target, weight=self.weight, ignore_index=self.ignore_index, reduction=self.reduction,
            label_smoothing=self.label_smoothing,
        )


class MSELoss(nn.MSELoss):
    """torch.nn.MSELoss computed by nbops.mse_loss."""

    def forward(self, input, target):
        if _traced():
            return torch.ops.nbops.mse_loss(input, target, self.reduction)
        return F.mse_loss(input, target, reduction=self.reduction)


class RoIPool(_TorchRoIPool):
    """torchvision.ops.RoIPool computed by nbops.roi_pool: forward(input, rois) with rois a Tensor[K, 5]
    or a list of Tensor[L, 4]."""

    def forward(self, input, rois):
        if _traced():
            if not isinstance(rois, torch.Tensor):  # one [L, 4] per image -> [K, 5] with the image index
                rois = torch.cat([torch.cat([torch.full_like(b[:, :1], i), b], dim=1) for i, b in enumerate(rois)])
            return torch.ops.nbops.roi_pool(input, rois, self.output_size, self.spatial_scale)[0]
        return F.roi_pool(input, rois, self.output_size, self.spatial_scale)



# torch's modules and their nbops twins: what convert() swaps (exact types only)
_TWINS = {
    nn.Conv2d: Conv2d,
    nn.ConvTranspose2d: ConvTranspose2d,
    nn.MaxPool2d: MaxPool2d,
    nn.AvgPool2d: AvgPool2d,
    nn.BatchNorm1d: BatchNorm1d,
    nn.BatchNorm2d: BatchNorm2d,
    nn.Flatten: Flatten,
    nn.Sigmoid: Sigmoid,
    nn.CrossEntropyLoss: CrossEntropyLoss,
    nn.MSELoss: MSELoss,
    _TorchRoIPool: RoIPool,
}


def convert(module: nn.Module) -> nn.Module:
    """Make `module` and every submodule whose type is exactly a torch.nn (or torchvision.ops.RoIPool)
    module with an nbops twin compute through nbops, in place, and return `module` (like
    torch.nn.SyncBatchNorm.convert_sync_batchnorm):

        model = nbops.nn.convert(torchvision.models.resnet18())

    Each such module becomes an instance of its twin (its class is swapped): the same object, with its
    parameters, buffers, hooks and training mode, so an optimizer built on the model keeps working and a
    state_dict loads either way. Every other module is left alone, subclasses of the torch modules that
    a user wrote included (their forward may differ), and so are modules that are already twins.
    """
    for sub in module.modules():
        twin = _TWINS.get(type(sub))
        if twin is not None:
            sub.__class__ = twin
    return module
