import torch
from conftest import nbytes, randn
from torchvision.ops import roi_pool

import nbops


def test_roi_pool(compare):
    # a Faster R-CNN head: stride-16 features of two ~800x1088 images, 512 proposals per batch
    feat = randn(2, 256, 50, 68)
    g = torch.Generator().manual_seed(1)
    corners = torch.rand(512, 4, generator=g) * torch.tensor([1088.0, 800.0, 1088.0, 800.0])
    rois = torch.cat(
        [
            torch.randint(0, 2, (512, 1), generator=g).float(),
            torch.minimum(corners[:, :2], corners[:, 2:]),
            torch.maximum(corners[:, :2], corners[:, 2:]),
        ],
        dim=1,
    )
    out = roi_pool(feat, rois, 7, 1 / 16)
    case = "2x256x50x68 512 boxes 7x7 scale 1/16"
    compare(
        f"roi_pool {case}", case, lambda: roi_pool(feat, rois, 7, 1 / 16), lambda: nbops.roi_pool(feat, rois, 7, 1 / 16),
        nbytes(feat, rois, out),
    )
