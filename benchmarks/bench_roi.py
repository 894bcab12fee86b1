import torch
from conftest import nbytes, randn
from torchvision.ops import roi_pool

import nbops
from nbops.bench import detection_rois


def test_roi_pool(compare):
    # a Faster R-CNN head: stride-16 features of two ~800x1088 images, 512 proposals per batch
    feat = randn(2, 256, 50, 68)
    rois = detection_rois(512, 2, 800.0, 1088.0, torch.Generator().manual_seed(1))
    out = roi_pool(feat, rois, 7, 1 / 16)
    case = "2x256x50x68 512 boxes 7x7 scale 1/16"
    compare(
        f"roi_pool {case}", case, lambda: roi_pool(feat, rois, 7, 1 / 16), lambda: nbops.roi_pool(feat, rois, 7, 1 / 16),
        nbytes(feat, rois, out),
    )
