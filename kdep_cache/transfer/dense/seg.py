"""Semantic segmentation transfer: the student backbone + a PSP (paper), DeepLabV3-ASPP or FCN
head, trained through the shared loop with per-pixel cross-entropy (255 = ignore) and scored
by mIoU on the val split.

- ResNets are dilated to output stride 8 (layer3 dilation 2, layer4 dilation 4, torchvision's
  ``replace_stride_with_dilation`` convention, applied here so it also works for the
  BasicBlock ResNet-18/34 that torchvision refuses to dilate); MobileNets keep their natural
  stride 32 (their ``features``).
- Training: random scale in [0.5, 2.0], random crop S x S (image padded with the mean, mask
  with 255), horizontal flip, SGD + poly lr, one lr for backbone and head (the loop sets one
  lr for every parameter group; PSPNet uses 10x on the head). No auxiliary loss.
- Evaluation: each val image whole, single scale, batch 1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models._utils import IntermediateLayerGetter
from torchvision.models.segmentation.deeplabv3 import DeepLabHead
from torchvision.models.segmentation.fcn import FCNHead
from torchvision.transforms import functional as TF
from tqdm import tqdm

from ...errors import InputError
from ...names import SEG_HEADS
from ...train.objectives import Objective
from ...views.images import BadImage, load_rgb
from .metrics import IGNORE, SegScore, checked

HEADS = SEG_HEADS
SCALE_RANGE = (0.5, 2.0)
PSP_BINS = (1, 2, 3, 6)


def dilate_resnet(net: nn.Module, flags=(False, True, True)) -> nn.Module:
    """In place: strides of layer2..4 -> dilations where ``flags`` say (as torchvision)."""
    dilation = 1
    for layer, flag in zip((net.layer2, net.layer3, net.layer4), flags):
        if not flag:
            continue
        previous, dilation = dilation, dilation * 2
        for b, block in enumerate(layer):
            d = previous if b == 0 else dilation
            for conv in (m for m in block.modules() if isinstance(m, nn.Conv2d)):
                if conv.stride == (2, 2):
                    conv.stride = (1, 1)
                if conv.kernel_size == (3, 3):
                    conv.dilation, conv.padding = (d, d), (d, d)
    return net


class PSPHead(nn.Module):
    """Pyramid pooling (bins 1, 2, 3, 6; each 1x1 conv to C/4) + 3x3 conv 512 + classifier."""

    def __init__(self, in_ch: int, n_classes: int, bins=PSP_BINS, mid: int = 512):
        super().__init__()
        red = in_ch // len(bins)
        self.stages = nn.ModuleList(nn.Sequential(
            nn.AdaptiveAvgPool2d(b), nn.Conv2d(in_ch, red, 1, bias=False), nn.BatchNorm2d(red),
            nn.ReLU(inplace=True)) for b in bins)
        self.bottleneck = nn.Sequential(
            nn.Conv2d(in_ch + red * len(bins), mid, 3, padding=1, bias=False),
            nn.BatchNorm2d(mid), nn.ReLU(inplace=True), nn.Dropout2d(0.1),
            nn.Conv2d(mid, n_classes, 1))

    def forward(self, x):
        h, w = x.shape[-2:]
        pyr = [F.interpolate(s(x), (h, w), mode="bilinear", align_corners=False)
               for s in self.stages]
        return self.bottleneck(torch.cat([x] + pyr, 1))


class SegNet(nn.Module):
    """Backbone + head; ``forward`` returns ``{"logits": N x K x H x W}`` at input size."""

    def __init__(self, net: nn.Module, family: str, n_classes: int, head: str = "psp"):
        super().__init__()
        if family == "resnet":
            ch = net.fc.in_features
            self.backbone = IntermediateLayerGetter(dilate_resnet(net), {"layer4": "out"})
        else:
            ch = net.features[-1][0].out_channels
            self.backbone = IntermediateLayerGetter(net, {"features": "out"})
        if head not in HEADS:
            raise InputError(f"--seg-head must be one of {', '.join(HEADS)}, got {head!r}")
        self.head = {"psp": lambda: PSPHead(ch, n_classes),
                     "deeplabv3": lambda: DeepLabHead(ch, n_classes),
                     "fcn": lambda: FCNHead(ch, n_classes)}[head]()

    def forward(self, x, want_logits: bool = True, want_post: bool = False):
        y = self.head(self.backbone(x)["out"])
        return {"logits": F.interpolate(y, x.shape[-2:], mode="bilinear", align_corners=False)}


class PixelCE(Objective):
    """Per-pixel cross-entropy, label 255 ignored."""

    needs = "labels"
    want_logits = True

    def forward(self, out, target):
        ce = F.cross_entropy(out["logits"].float(), target, ignore_index=IGNORE)
        return {"loss": self.weight * ce, "ce": ce}


def load_mask(root: str, s) -> np.ndarray:
    """The class-index mask (H x W uint8) of sample ``s`` (VOC PNG or COCO polygons)."""
    if s.mask is not None:
        with Image.open(f"{root}/{s.mask}") as m:
            if m.mode not in ("P", "L", "I", "I;16"):
                raise InputError(f"{s.mask} is a {m.mode} image: a class-index PNG (palette or "
                                 "grayscale) is expected")
            a, mode = np.asarray(m), m.mode
        if a.dtype != np.uint8 and a.size and (a.min() < 0 or a.max() > IGNORE):
            # an I / I;16 PNG: a value above 255 would wrap to another class in uint8
            raise InputError(f"{s.mask} holds values {int(a.min())}..{int(a.max())} (a {mode}"
                             f"-mode PNG): a class-index mask holds 0..K and {IGNORE} (ignore); "
                             "map its values to class indices first")
        return a.astype(np.uint8)
    from pycocotools import mask as mask_utils
    out = np.zeros((s.height, s.width), np.uint8)
    for label, seg, crowd in sorted(s.polygons, key=lambda p: p[2]):  # crowd regions last
        rle = (mask_utils.frPyObjects(seg, s.height, s.width) if isinstance(seg, list) else
               mask_utils.frPyObjects(seg, s.height, s.width) if isinstance(seg["counts"], list)
               else seg)
        m = mask_utils.decode(rle)
        m = m.max(2) if m.ndim == 3 else m
        out[m > 0] = IGNORE if crowd else label
    return out


class SegDataset(Dataset):
    """Item -> (normalised image, long mask, error reason or "")."""

    def __init__(self, root: str, samples, mean, std, crop: int | None):
        self.root, self.samples, self.mean, self.std, self.crop = root, samples, mean, std, crop

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, j: int):
        s = self.samples[j]
        try:
            img = load_rgb(f"{self.root}/{s.image}")
            mask = load_mask(self.root, s)
        except BadImage as e:
            return _blank(f"cannot decode image {s.image}: {e}: remove or replace it", self.crop)
        except InputError as e:  # from a loader worker too: one line, not its traceback
            return _blank(str(e), self.crop)
        x = TF.normalize(TF.to_tensor(img), self.mean, self.std)
        y = torch.from_numpy(mask.astype(np.int64))
        if self.crop is not None:
            x, y = random_scale_crop(x, y, self.crop)
        return x, y, ""


def _blank(reason: str, crop: int | None):
    """A placeholder item (collates with the batch's crops) carrying why it failed."""
    n = crop or 8
    return torch.zeros(3, n, n), torch.zeros(n, n, dtype=torch.long), reason


def random_scale_crop(x: torch.Tensor, y: torch.Tensor, crop: int):
    """Scale by U(0.5, 2.0), pad to >= crop (image 0 = the mean, mask 255), crop, flip."""
    s = float(torch.empty(1).uniform_(*SCALE_RANGE))
    h, w = max(1, round(x.shape[1] * s)), max(1, round(x.shape[2] * s))
    x = F.interpolate(x[None], (h, w), mode="bilinear", align_corners=False)[0]
    y = F.interpolate(y[None, None].float(), (h, w), mode="nearest")[0, 0].long()
    ph, pw = max(0, crop - h), max(0, crop - w)
    if ph or pw:
        x = F.pad(x, (0, pw, 0, ph), value=0.0)
        y = F.pad(y, (0, pw, 0, ph), value=IGNORE)
    i = int(torch.randint(0, x.shape[1] - crop + 1, ()))
    j = int(torch.randint(0, x.shape[2] - crop + 1, ()))
    x, y = x[:, i:i + crop, j:j + crop], y[i:i + crop, j:j + crop]
    if torch.rand(()) < 0.5:
        x, y = x.flip(-1), y.flip(-1)
    return x, y


def _drop_last(n: int, batch_size: int) -> bool:
    """Drop a last batch of one image (BatchNorm in the head needs two)."""
    return n > batch_size and n % batch_size == 1


def steps_per_epoch(n: int, batch_size: int) -> int:
    return n // batch_size if _drop_last(n, batch_size) else -(-n // batch_size)


def loader(root, samples, mean, std, crop, batch_size, workers, shuffle, seed):
    n = len(samples)
    return DataLoader(SegDataset(root, samples, mean, std, crop), batch_size=batch_size,
                      shuffle=shuffle, num_workers=workers,
                      drop_last=shuffle and _drop_last(n, batch_size),
                      generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def evaluate(net: SegNet, root: str, samples, classes, mean, std, device, workers=0) -> dict:
    """mIoU etc. over ``samples`` (whole images, batch 1)."""
    was = net.training
    net.eval()
    score = SegScore(len(classes) + 1)
    batches = checked(loader(root, samples, mean, std, None, 1, workers, False, 0))
    for x, y in tqdm(batches, total=len(samples), desc="segmentation val", unit="image",
                     disable=None, leave=False):
        pred = net(x.to(device))["logits"].argmax(1).cpu()
        score.add(pred.numpy(), y.numpy())
    net.train(was)
    return score.result(["background"] + list(classes))
