"""Object-detection transfer: torchvision's Faster R-CNN on the student backbone + FPN, trained
through the shared loop and scored by COCO AP / AP50 / AP75 (pycocotools).

- Backbone as torchvision builds it for a pre-trained network: BatchNorm frozen
  (``FrozenBatchNorm2d`` holding the student's statistics) and the stem + first stage frozen
  (3 trainable stages). A ``random:NAME`` student gets trainable BatchNorm and all stages
  trainable, as torchvision does without weights. ResNets feed a 4-level FPN (+ max-pool
  level), MobileNets a 2-level FPN on their last two stages (+ pool), as in
  ``fasterrcnn_mobilenet_v3_large_fpn``.
- Input: every image, in training and evaluation alike, letterboxed by :func:`letterbox`
  (longer side S, bilinear, padded with the mean; ``min_size = max_size = S`` in
  torchvision's transform, whose resize is then the identity). Below 800 px (torchvision's default resolution) anchor sizes
  32..512 are scaled by S / 800, so they keep covering the objects of a small image, and the
  per-image RoI counts (512 sampled for the box head in training, 2000 / 1000 proposals in
  training / test) by (S / 800)^2, floored at 64 / 200 / 100, so a small image does not pay
  for 512 RoIs through the 12544 x 1024 box head.
- Training: horizontal flip; boxes marked difficult / iscrowd are left out of the loss and
  passed to the evaluator as ignored. SGD + multistep lr with warm-up, fp32.
- A Faster R-CNN computes its losses inside ``forward`` from the targets, so detection
  gives the loop its own :func:`step` (no objective): the detector called with the images and
  targets, its RPN and box-head losses summed. Targets travel as one padded tensor
  ``B x N x 5`` (label, x1, y1, x2, y2; label 0 = padding).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision.models.detection import FasterRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import _mobilenet_extractor, _resnet_fpn_extractor
from torchvision.ops.misc import FrozenBatchNorm2d
from torchvision.transforms import functional as TF
from tqdm import tqdm

from ...errors import ArtifactError
from ...views.images import BadImage, load_rgb
from .metrics import coco_ap

ANCHORS = (32, 64, 128, 256, 512)
ASPECTS = (0.5, 1.0, 2.0)
REFERENCE_SIZE = 800
TRAINABLE = 3


def freeze_bn(net: nn.Module) -> nn.Module:
    """In place: every BatchNorm2d -> FrozenBatchNorm2d with the same affine + statistics."""
    for name, m in list(net.named_children()):
        if isinstance(m, nn.BatchNorm2d):
            f = FrozenBatchNorm2d(m.num_features, eps=m.eps)
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(f, k).copy_(getattr(m, k).detach())
            setattr(net, name, f)
        else:
            freeze_bn(m)
    return net


def anchor_sizes(size: int) -> tuple:
    f = min(1.0, size / REFERENCE_SIZE)
    return tuple(max(4, int(round(a * f))) for a in ANCHORS)


def roi_counts(size: int) -> dict:
    """torchvision's per-image RoI / proposal counts, scaled by the image area below 800 px."""
    f = min(1.0, (size / REFERENCE_SIZE) ** 2)
    return {"box_batch_size_per_image": max(64, round(512 * f)),
            "rpn_post_nms_top_n_train": max(200, round(2000 * f)),
            "rpn_post_nms_top_n_test": max(100, round(1000 * f))}


def build_detector(net: nn.Module, family: str, n_classes: int, size: int, mean, std,
                   pretrained: bool) -> FasterRCNN:
    """Faster R-CNN (``n_classes`` + background) on the torchvision classifier ``net``."""
    sizes = anchor_sizes(size)
    if pretrained:
        freeze_bn(net)
    if family == "resnet":
        backbone = _resnet_fpn_extractor(net, TRAINABLE if pretrained else 5)
        anchors = AnchorGenerator(tuple((s,) for s in sizes), (ASPECTS,) * len(sizes))
    else:
        stages = 2 + sum(bool(getattr(b, "_is_cn", False)) for b in net.features)
        backbone = _mobilenet_extractor(net, True, TRAINABLE if pretrained else stages)
        anchors = AnchorGenerator((sizes,) * 3, (ASPECTS,) * 3)
    return FasterRCNN(backbone, num_classes=n_classes + 1, min_size=size, max_size=size,
                      image_mean=list(mean), image_std=list(std), rpn_anchor_generator=anchors,
                      **roi_counts(size))


class DetNet(nn.Module):
    """Holds the detector (so the loop trains, checkpoints and resumes it); see module doc."""

    def __init__(self, detector: FasterRCNN):
        super().__init__()
        self.detector = detector

    def forward(self, images, targets=None):
        return self.detector(images, targets)


def step(net: DetNet, batch) -> dict:
    """The loop's step: the sum of Faster R-CNN's RPN and box-head losses for the padded
    targets (``batch.target``, B x N x 5), with each part."""
    targets = []
    for t in batch.target:
        keep = t[:, 0] > 0
        targets.append({"labels": t[keep, 0].long(), "boxes": t[keep, 1:].float()})
    parts = net(list(batch.x), targets)
    return {"loss": sum(parts.values()), **parts}


class Letterboxed(NamedTuple):
    x: torch.Tensor    # S x S, in [0, 1]
    sx: float          # canvas pixels per image pixel, horizontally (resized width / width)
    sy: float


def letterbox(img, size: int, mean) -> Letterboxed:
    """``img`` resized (bilinear, antialiased) so that its
    longer side is S, top-left on a canvas of the mean colour (0 once normalised, what
    torchvision's transform pads with). Training and evaluation both go through this, so the
    detector's own transform only normalises (its resize is the identity at S x S)."""
    scale = size / max(img.size)
    w, h = max(1, round(img.size[0] * scale)), max(1, round(img.size[1] * scale))
    x = TF.resize(TF.to_tensor(img), [h, w], interpolation=TF.InterpolationMode.BILINEAR,
                  antialias=True)
    canvas = torch.tensor(list(mean), dtype=x.dtype).view(3, 1, 1).repeat(1, size, size)
    canvas[:, :h, :w] = x
    return Letterboxed(canvas, w / img.size[0], h / img.size[1])


class DetDataset(Dataset):
    """Training item -> (S x S letterboxed image in [0, 1], N x 5 boxes, error or "")."""

    def __init__(self, root: str, samples, size: int, mean, flip: bool = True):
        self.root, self.samples, self.size, self.mean, self.flip = root, samples, size, mean, flip

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, j: int):
        s, size = self.samples[j], self.size
        rows = [[lab, *b] for b, lab, ign in zip(s.boxes, s.labels, s.ignore or
                                                 [False] * len(s.boxes)) if not ign]
        t = torch.tensor(rows, dtype=torch.float32).reshape(-1, 5)
        try:
            img = load_rgb(f"{self.root}/{s.image}")
        except BadImage as e:
            return (torch.zeros(3, size, size), t,
                    f"cannot decode image {s.image}: {e}: remove or replace it")
        lb = letterbox(img, size, self.mean)
        x = lb.x
        t[:, 1:] *= torch.tensor([lb.sx, lb.sy] * 2)
        if self.flip and torch.rand(()) < 0.5:  # flip the whole canvas (boxes in its coordinates)
            x = x.flip(-1)
            t[:, [1, 3]] = size - t[:, [3, 1]]
        return x, t, ""


def collate(items):
    n = max([len(t) for _, t, _ in items] + [1])
    pad = torch.zeros(len(items), n, 5)
    for i, (_, t, _) in enumerate(items):
        pad[i, :len(t)] = t
    return torch.stack([x for x, _, _ in items]), pad, [r for _, _, r in items]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return -(-n // batch_size)  # the loader keeps the last partial batch


def loader(root, samples, size, mean, batch_size, workers, seed):
    return DataLoader(DetDataset(root, samples, size, mean), batch_size=batch_size, shuffle=True,
                      num_workers=workers, collate_fn=collate,
                      generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def evaluate(net: DetNet, root: str, samples, classes, device, size: int) -> dict:
    """AP / AP50 / AP75 over ``samples`` (letterboxed as in training, boxes mapped back to
    each image's own pixels)."""
    det = net.detector
    was = det.training
    det.eval()
    dets = []
    for s in tqdm(samples, desc="detection val", unit="image", disable=None, leave=False):
        try:
            img = load_rgb(f"{root}/{s.image}")
        except BadImage as e:
            raise ArtifactError(f"cannot decode image {s.image}: {e}: remove or replace it"
                                ) from None
        lb = letterbox(img, size, det.transform.image_mean)
        o = det([lb.x.to(device)])[0]
        boxes = o["boxes"].cpu() / torch.tensor([lb.sx, lb.sy] * 2)
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, img.size[0])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, img.size[1])
        dets += [{"image_id": s.id, "box": b.tolist(), "label": int(lab), "score": float(sc)}
                 for b, lab, sc in zip(boxes, o["labels"].cpu(), o["scores"].cpu())]
    det.train(was)
    gt = [{"id": s.id, "width": s.width, "height": s.height, "boxes": s.boxes,
           "labels": s.labels, "ignore": s.ignore} for s in samples]
    return {**coco_ap(gt, dets, list(classes)), "detections": len(dets)}
