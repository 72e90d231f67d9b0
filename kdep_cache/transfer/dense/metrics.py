"""Dense-task scores.

- Segmentation: a pixel confusion matrix accumulated over the val split (label 255 = ignore),
  per-class IoU = TP / (TP + FP + FN), mIoU = mean over classes whose union is non-empty (the
  VOC / Cityscapes definition), plus pixel accuracy.
- Detection: AP (IoU 0.50:0.95), AP50 and AP75 from pycocotools' ``COCOeval``. It is the
  reference implementation that defines the COCO numbers (101-point interpolated precision,
  area range "all", 100 detections per image); maintained wrappers (torchmetrics' MeanAP,
  detectron2's COCOEvaluator) call it too, so using it directly adds no dependency and no
  second implementation. VOC data is scored with the same COCO-style AP (the paper reports
  AP / AP50 / AP75 for VOC as well); VOC "difficult" objects are passed as ``iscrowd`` so
  they are neither required nor penalised.

Both tasks' loaders yield ``(x, target, reasons)``; :func:`checked` stops at an undecodable
image, in training and scoring alike.
"""

from __future__ import annotations

import contextlib
import io

import numpy as np

from ...errors import ArtifactError, InputError
from ..classification.metrics import confusion

IGNORE = 255


class SegScore:
    """Streaming confusion matrix over ``n_classes`` (background included)."""

    def __init__(self, n_classes: int):
        self.n = n_classes
        self.cm = np.zeros((n_classes, n_classes), np.int64)

    def add(self, pred, target) -> None:
        pred, target = np.asarray(pred, np.int64).ravel(), np.asarray(target, np.int64).ravel()
        keep = target != IGNORE
        pred, target = pred[keep], target[keep]
        if len(target) and (target.max() >= self.n or target.min() < 0):
            raise InputError(f"mask label {int(target.max())} is not a class index "
                             f"(0..{self.n - 1}) nor {IGNORE}")
        self.cm += confusion(pred, target, self.n)

    def result(self, classes: list[str]) -> dict:
        """``miou`` and ``pixel_acc`` in percent, ``per_class_iou`` (None: class absent)."""
        tp = np.diag(self.cm).astype(np.float64)
        union = self.cm.sum(0) + self.cm.sum(1) - tp
        iou = np.where(union > 0, tp / np.maximum(union, 1), np.nan)
        total = self.cm.sum()
        return {"miou": float(np.nanmean(iou) * 100) if (union > 0).any() else float("nan"),
                "pixel_acc": float(tp.sum() / total * 100) if total else float("nan"),
                "per_class_iou": {c: (None if np.isnan(v) else float(v * 100))
                                  for c, v in zip(classes, iou)}}


def coco_ap(gt: list[dict], detections: list[dict], classes: list[str]) -> dict:
    """COCO box AP / AP50 / AP75 (percent; nan without any ground-truth box).

    ``gt``: per image ``{"id", "width", "height", "boxes": [[x1, y1, x2, y2], ...],
    "labels": [1-based class], "ignore": [bool]}``; ``detections``: ``{"image_id", "box":
    [x1, y1, x2, y2], "label", "score"}``."""
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval
    anns, k = [], 0
    for im in gt:
        for b, lab, ign in zip(im["boxes"], im["labels"], im.get("ignore") or
                               [False] * len(im["boxes"])):
            k += 1
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": k, "image_id": im["id"], "category_id": int(lab),
                         "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": int(ign)})
    if not any(not a["iscrowd"] for a in anns):
        return {"ap": float("nan"), "ap50": float("nan"), "ap75": float("nan")}
    if not detections:
        return {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        coco = COCO()
        coco.dataset = {"images": [{"id": im["id"], "width": im["width"],
                                    "height": im["height"]} for im in gt],
                        "annotations": anns,
                        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(classes)]}
        coco.createIndex()
        res = coco.loadRes([{"image_id": d["image_id"], "category_id": int(d["label"]),
                             "bbox": [d["box"][0], d["box"][1], d["box"][2] - d["box"][0],
                                      d["box"][3] - d["box"][1]], "score": float(d["score"])}
                            for d in detections])
        ev = COCOeval(coco, res, "bbox")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    s = [float(v) * 100 if v >= 0 else float("nan") for v in ev.stats[:3]]
    return {"ap": s[0], "ap50": s[1], "ap75": s[2]}


def checked(batches):
    """Yield ``(x, target)`` of a dense loader's ``(x, target, reasons)`` batches; an
    undecodable image stops with a one-line error."""
    for x, y, reasons in batches:
        bad = [r for r in reasons if r]
        if bad:
            raise ArtifactError(bad[0])
        yield x, y
