"""Segmentation and detection transfer: the protocol record and the per-seed fine-tunes, each
through the one training loop (:func:`kdep_cache.train.loop.train`), resumable at an epoch
boundary from ``RESULT_DIR/seed-N/checkpoint.pt`` (tested to resume and finish, not bitwise) and a per-epoch ``metrics.jsonl``. The val split is
scored once, after the last epoch (the paper reports final numbers)."""

from __future__ import annotations

import json
import logging
import time

import torch

from ...errors import InputError
from ...runtime.device import default_precision, resolved_precision
from ...train.loop import RunContext, TrainBatch, sgd, train
from ..classification.finetune import start_state
from . import det, seg
from .metrics import checked
from .schedules import WARMUP_FACTOR, make_schedule, warmup_epochs

log = logging.getLogger(__name__)
KEYS = {"segmentation": ("miou", "pixel_acc"), "detection": ("ap", "ap50", "ap75")}
FAMILIES = ("resnet", "mobilenet")


def check_student(student, task: str) -> None:
    """Dense heads are built on torchvision ResNet / MobileNet students only."""
    family = student.build(2, 0).family
    if family not in FAMILIES:
        raise InputError(f"--task {task} needs a torchvision ResNet or MobileNet student; "
                         f"{student.spec} is a {family} network")


def require_extras(task: str, layout: str) -> None:
    """pycocotools scores detection (COCOeval) and renders COCO polygons: refuse up front, not
    after the training, when it is not installed (as diagnose does for matplotlib)."""
    if task != "detection" and layout != "coco":
        return
    try:
        import pycocotools.coco  # noqa: F401
    except ImportError:
        why = "scores AP with" if task == "detection" else "renders COCO masks with"
        raise InputError(f"--task {task} {why} pycocotools, which is not installed: pip install "
                         "pycocotools (or pip install 'kdep-cache[det]')") from None


def protocol(cfg, student, size: int, source: str, device, n_train: int
             ) -> tuple[dict, tuple]:
    if cfg.task == "segmentation":
        precision = (default_precision(device, size) if cfg.precision == "auto"
                     else resolved_precision(device, cfg.precision))
        extra = {"head": cfg.seg_head, "output_stride": "8 (ResNet, dilated) / 32 (MobileNet)",
                 "train_transform": f"random scale {seg.SCALE_RANGE}, random crop {size} "
                                    "(pad: mean / 255), horizontal flip",
                 "eval": "whole image, single scale", "ignore_label": 255,
                 "unit": "mIoU percent (classes with a non-empty union, background included)"}
    else:
        precision = "fp32"
        extra = {"model": "Faster R-CNN + FPN (torchvision)",
                 "backbone": "FrozenBatchNorm2d, 3 trainable stages (random init: all, BN "
                             "trainable)", "anchor_sizes": list(det.anchor_sizes(size)),
                 **det.roi_counts(size),
                 "train_transform": f"letterbox longer side to {size} (bilinear, mean fill), "
                                    "horizontal flip",
                 "eval": f"letterbox longer side to {size} (bilinear, mean fill), "
                         "pycocotools COCOeval bbox",
                 "unit": "COCO AP percent (IoU .50:.95), AP50, AP75"}
    mod = seg if cfg.task == "segmentation" else det
    warm = warmup_epochs(cfg.epochs, mod.steps_per_epoch(n_train, cfg.batch_size))
    extra.update(warmup_epochs=round(warm, 6), warmup_start_factor=WARMUP_FACTOR)
    p = {"task": cfg.task, "mode": "finetune", "image_size": size, "image_size_source": source,
         "mean": list(student.mean_std[0]), "std": list(student.mean_std[1]),
         "precision": precision, "epochs": cfg.epochs, "batch_size": cfg.batch_size,
         "lr": cfg.lr, "momentum": cfg.momentum, "weight_decay": cfg.weight_decay,
         "schedule": cfg.schedule, "optimizer": "SGD", "seeds": list(cfg.seeds), **extra}
    return p, KEYS[cfg.task]


class _Epoch:
    """One epoch's :class:`TrainBatch` es (with a length, for the loop's progress bar)."""

    def __init__(self, loader):
        self.loader = loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for x, y in checked(self.loader):
            yield TrainBatch(x, y)


def run_seeds(student, data, p: dict, settings: dict, cfg, out, device) -> list[dict]:
    results = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        seed_settings = json.loads(json.dumps({**settings, "seed": seed}))
        r = _one_seed(student, data, p, seed_settings, seed, cfg, out / f"seed-{seed}", device)
        r["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("seed %d: %s", seed, ", ".join(f"{k} {r[k]:.2f}" for k in KEYS[cfg.task]))
        results.append(r)
    return results


def _one_seed(student, data, p, settings, seed, cfg, run_dir, device) -> dict:
    start = start_state(run_dir, settings, cfg.resume, what=f"{cfg.task} fine-tune")
    fnet = student.build(2, seed)  # seeded: the new head / FPN / RPN init follow the seed
    size, root, k = p["image_size"], data.path, len(data.classes)
    if cfg.task == "segmentation":
        model = seg.SegNet(fnet.net, fnet.family, k + 1, cfg.seg_head)
        objective, step = seg.PixelCE(), None  # the default step: PixelCE(model(x), y)

        def batches(epoch):
            torch.manual_seed(seed * 1_000_003 + epoch)
            return _Epoch(seg.loader(root, data.train, p["mean"], p["std"], size,
                                     p["batch_size"], cfg.workers, True, seed * 1_000_003 + epoch))

        def score():
            return seg.evaluate(model, root, data.val, data.classes, p["mean"], p["std"], device,
                                cfg.workers)
    else:
        model = det.DetNet(det.build_detector(fnet.net, fnet.family, k, size, p["mean"],
                                              p["std"], pretrained=student.kind != "random"))
        objective, step = None, det.step  # Faster R-CNN computes its own losses

        def batches(epoch):
            torch.manual_seed(seed * 1_000_003 + epoch)
            return _Epoch(det.loader(root, data.train, size, p["mean"], p["batch_size"],
                                     cfg.workers, seed * 1_000_003 + epoch))

        def score():
            return det.evaluate(model, root, data.val, data.classes, device, size)
    model = model.to(device)
    params = [q for q in model.parameters() if q.requires_grad]
    opt = sgd(params, p["lr"], p["momentum"], p["weight_decay"])
    warm = p.get("warmup_epochs", 0.0)
    schedule = make_schedule(p["schedule"], p["epochs"], p["lr"], cfg.lr_step, warm)
    run = RunContext(run_dir, settings, device, p["precision"], f"{cfg.task} seed {seed}")
    history = train(model, objective, batches, opt, schedule, run, start,
                    on_epoch_end=lambda e: score() if e + 1 == p["epochs"] else {}, step=step)
    last = history[-1]
    keep = ("epoch", "loss", "lr", "seconds", "images_per_s")
    return {"seed": seed, **{k: last[k] for k in KEYS[cfg.task]},
            **{k: last[k] for k in ("per_class_iou", "detections") if k in last},
            "epochs": last["epoch"], "final_train_loss": last.get("loss"),
            "history": [{k: r.get(k) for k in keep} for r in history]}
