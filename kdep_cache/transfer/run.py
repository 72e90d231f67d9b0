"""``transfer``: one student x one downstream dataset x several seeds -> ``results.json``.

``--task classification`` (default: linear probe or fine-tune, :mod:`.linear` /
:mod:`.finetune`), ``segmentation`` or ``detection`` (always fine-tuned, :mod:`.dense`)."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import statistics
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from ..cache import shapes
from ..cache.schema import FORMAT_VERSION, TRANSFER, now_iso, producer_info
from ..errors import InputError, TrainingError
from ..names import CHECKPOINT, RESULTS, TRANSFER_MODES, TRANSFER_TASKS
from ..runtime import dist
from ..runtime.device import autocast, resolve_device
from ..runtime.dist import env_ranks
from ..storage.fsio import fingerprint, read_json, write_json, writer_lock
from . import fairness
from .classification.data import open_downstream
from .classification.linear import C_GRID, MAX_ITER, VAL_FRACTION
from .classification.seeds import finetune_seeds as _finetune
from .classification.seeds import linear_seeds as _linear
from .leakage import METHOD as LEAKAGE_METHOD
from .leakage import leaked
from .reference import refuse_training
from .sizes import input_size
from .students import resolve_student

log = logging.getLogger(__name__)
MODES = TRANSFER_MODES


TASKS = TRANSFER_TASKS
# Defaults per task (None in TransferConfig = take these). Classification: the paper's
# fine-tuning (150 epochs, lr x0.1 at each third). Segmentation: PSPNet on VOC (batch 16,
# lr 0.01, poly, 50 epochs, wd 1e-4). Detection: detectron2's COCO 1x (batch 16, lr 0.02,
# ~12 epochs, steps at 2/3 and 8/9, wd 1e-4). Small sets need fewer epochs / a smaller batch:
# pass them.
TASK_DEFAULTS = {
    "classification": {"mode": "linear", "epochs": 150, "batch_size": 64, "lr": 0.001,
                       "weight_decay": 5e-4, "schedule": "step"},
    "segmentation": {"mode": "finetune", "epochs": 50, "batch_size": 16, "lr": 0.01,
                     "weight_decay": 1e-4, "schedule": "poly"},
    "detection": {"mode": "finetune", "epochs": 12, "batch_size": 16, "lr": 0.02,
                  "weight_decay": 1e-4, "schedule": "multistep"},
}


@dataclass(frozen=True)  # resolved values are derived with dataclasses.replace
class TransferConfig:
    student: str
    data: str
    out: str
    arch: str | None = None
    label: str | None = None
    task: str = "classification"
    mode: str | None = None        # None: TASK_DEFAULTS (linear for classification)
    epochs: int | None = None      # paper: 150 epochs, lr x0.1 at epoch 50 (classification)
    batch_size: int | None = None
    lr: float | None = None
    weight_decay: float | None = None
    momentum: float = 0.9
    schedule: str | None = None    # step: x0.1 every --lr-step epochs (default: each third)
    lr_step: float | None = None
    image_size: int | None = None  # default: the student's pre-training size, else the data's
    seeds: tuple = (0, 1, 2)
    test_fraction: float = 0.2     # only for a dataset without train/test folders
    split_seed: int = 0
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    allow_leakage: bool = False
    seg_head: str = "psp"          # psp (paper) | deeplabv3 | fcn
    keep_checkpoint: bool = False  # each seed's checkpoint.pt only serves --resume


# The dense tasks' default lr is the reference recipe's for a batch of 16, scaled linearly
# with --batch-size (the linear scaling rule detectron2 and torchvision's references state):
# lr 0.02 at batch 4 made a random-init Faster R-CNN diverge on a small set even after the
# warm-up, lr 0.005 did not.
REFERENCE_BATCH = 16


def resolved(cfg: TransferConfig) -> TransferConfig:
    """``cfg`` with every None default replaced by its task's default."""
    if cfg.task not in TASKS:
        raise InputError(f"--task must be one of {', '.join(TASKS)}, got {cfg.task!r}")
    d = dict(TASK_DEFAULTS[cfg.task])
    if cfg.task != "classification" and cfg.batch_size is not None and cfg.batch_size > 0:
        d["lr"] = d["lr"] * cfg.batch_size / REFERENCE_BATCH
    return replace(cfg, **{k: v for k, v in d.items() if getattr(cfg, k) is None})


def ignored_options(given: TransferConfig, cfg: TransferConfig) -> list[str]:
    """One warning line per option the user gave that the resolved run does not use."""
    out = []
    if cfg.mode == "linear":
        named = [f"--{k.replace('_', '-')}" for k in ("epochs", "lr", "weight_decay", "schedule",
                                                      "lr_step") if getattr(given, k) is not None]
        if named:
            out.append(f"{', '.join(named)} ignored: the linear probe trains no network (a "
                       "logistic regression, C chosen on a held-out part of train); they apply "
                       "to --mode finetune")
    elif given.lr_step is not None and cfg.schedule != "step":
        out.append(f"--lr-step ignored: it sets the step of --schedule step, not of "
                   f"--schedule {cfg.schedule}")
    return out


def lr_rule(cfg: TransferConfig, given: float | None) -> str:
    """How the lr was chosen (recorded in the protocol)."""
    if given is not None:
        return "--lr"
    if cfg.task == "classification":
        return "default"
    return (f"default {TASK_DEFAULTS[cfg.task]['lr']:g} x batch {cfg.batch_size} / "
            f"{REFERENCE_BATCH} (linear scaling)")


def _check(cfg: TransferConfig) -> None:
    refuse_training(cfg.student, cfg.mode, cfg.task)
    if cfg.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.task != "classification" and cfg.mode != "finetune":
        raise InputError(f"--mode {cfg.mode} is for classification; {cfg.task} always "
                         "fine-tunes (drop --mode)")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.workers < 0:
        raise InputError("--epochs and --batch-size must be >= 1, --workers >= 0")
    if cfg.task == "segmentation" and cfg.batch_size < 2:
        raise InputError("--batch-size must be >= 2 for segmentation (BatchNorm in the head)")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise InputError(f"--seeds must be distinct integers, got {list(cfg.seeds)}")
    if cfg.image_size is not None and cfg.image_size < 16:
        raise InputError(f"--image-size must be >= 16, got {cfg.image_size}")


def aggregate(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for a single seed)."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1
            else None, "n": len(vals), "values": vals}


def _protocol(cfg: TransferConfig, size: int, source: str, mean, std, precision: str) -> dict:
    p = {"task": "classification", "mode": cfg.mode, "image_size": size,
         "image_size_source": source, "mean": mean, "std": std,
         "test_transform": f"Resize({int(round(size * 256 / 224))}) + CenterCrop({size})",
         "features": "post (pooled, final activation applied)", "precision": precision,
         "batch_size": cfg.batch_size, "seeds": list(cfg.seeds), "unit": "top-1 percent",
         "metrics": "top-1, balanced accuracy (mean per-class recall), per-class accuracy"}
    if cfg.mode == "linear":
        p.update(classifier="StandardScaler + LogisticRegression(lbfgs)", max_iter=MAX_ITER,
                 c_grid=list(C_GRID), c_selection=f"stratified {VAL_FRACTION:.0%} of train")
    else:
        p.update(epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                 weight_decay=cfg.weight_decay, schedule=cfg.schedule, lr_step=cfg.lr_step,
                 optimizer="SGD", head="new linear layer on post",
                 train_transform=f"RandomResizedCrop({size}) + RandomHorizontalFlip")
    return p


def _leakage(cfg: TransferConfig, student, data) -> tuple[bool, list[str]]:
    checked, overlap = leaked(student.lineage, data.test_files())
    if overlap:
        msg = (f"LEAKAGE: {len(overlap)} of the {len(data.test)} downstream test images were "
               f"in {student.label}'s pre-training images (e.g. {overlap[0]})")
        log.warning("%s", msg)
        if not cfg.allow_leakage:
            raise InputError(msg + "; refusing: use a disjoint test split, or --allow-leakage")
    return checked, overlap


def transfer(cfg: TransferConfig) -> dict:
    """Run every seed of ``cfg`` and write ``RESULT_DIR/results.json`` atomically."""
    given = cfg
    given_lr, cfg = cfg.lr, resolved(cfg)
    for line in ignored_options(given, cfg):
        log.warning("%s", line)
    _check(cfg)
    r = env_ranks()
    if r is not None and r.world_size > 1 and cfg.task != "classification":
        raise InputError(f"transfer --task {cfg.task} does not run under torchrun yet "
                         f"({r.world_size} ranks): run it as one process")
    d = dist.context(cfg.device)
    student = resolve_student(cfg.student, cfg.arch, cfg.label)
    if cfg.task == "classification":
        data = open_downstream(cfg.data, cfg.test_fraction, cfg.split_seed)
        files = [os.path.join(data.train.root, p) for p in data.train.paths]
    else:
        from .dense.layouts import open_dense
        from .dense.run import check_student, require_extras
        check_student(student, cfg.task)
        data = open_dense(cfg.data, cfg.task)
        require_extras(cfg.task, data.layout)
        files = [os.path.join(data.path, s.image) for s in data.train]
    checked, overlap = _leakage(cfg, student, data)
    device = dist.rank_device(resolve_device(cfg.device))
    size, source = input_size(cfg.image_size, student.image_size, files, cfg.task)
    if source.startswith("student sidecar"):
        source = student.size_source
    mean, std = student.mean_std
    out = Path(cfg.out)
    if cfg.task == "classification":
        precision = (student.auto_precision(device, size) if cfg.precision == "auto"
                     else cfg.precision)
        autocast(device, precision)  # refuse e.g. fp16 on CPU before any work
        protocol = _protocol(cfg, size, source, mean, std, precision)
        keys = (("test_top1", "test_balanced") if cfg.mode == "linear" else
                ("final_top1", "best_top1", "final_balanced"))

        def run_seeds(settings):
            return (_linear(student, data, protocol, cfg, device, precision, d)
                    if cfg.mode == "linear" else
                    _finetune(student, data, protocol, settings, cfg, out, device, precision, d))
    else:
        from .dense import run as dense
        protocol, keys = dense.protocol(cfg, student, size, source, device, len(data.train))
        protocol["lr_rule"] = lr_rule(cfg, given_lr)
        precision = protocol["precision"]

        def run_seeds(settings):
            return dense.run_seeds(student, data, protocol, settings, cfg, out, device)
    settings = json.loads(json.dumps({
        "student": student.to_json(), "dataset": data.to_json(), "protocol": protocol}))
    with writer_lock(out) if d.main else contextlib.nullcontext():
        if (out / RESULTS).is_file():
            done = shapes.results(read_json(out / RESULTS), out / RESULTS)
            if done.get("settings_fingerprint") == fingerprint(settings):
                return {"out": str(out), "complete": True, "note": "already done",
                        **_headline(done)}
            raise InputError(f"{out} already holds transfer results with other settings; use "
                             "a new --out")
        t0 = time.perf_counter()
        try:
            per_seed = run_seeds(settings)
        except TrainingError as e:
            raise TrainingError(nonfinite_advice(str(e), cfg.lr)) from None
        secs = time.perf_counter() - t0
        result = {"format": TRANSFER, "format_version": FORMAT_VERSION, **settings,
                  "settings_fingerprint": fingerprint(settings),
                  "leakage": {"checked": checked, "by": LEAKAGE_METHOD, "overlap": len(overlap),
                              "allowed": bool(overlap) and cfg.allow_leakage,
                              "examples": overlap[:5]},
                  "seeds": per_seed, "summary": {k: aggregate([r[k] for r in per_seed])
                                                 for k in keys},
                  "primary": keys[0], "seconds": round(secs, 2), "device": str(device),
                  "producer": producer_info(), "argv": sys.argv, "created_at": now_iso(),
                  **({"ranks": d.world_size} if d.enabled else {})}
        if d.main:
            write_json(out / RESULTS, result)
            if not cfg.keep_checkpoint:  # results.json now marks every seed complete
                for seed in cfg.seeds:
                    (out / f"seed-{seed}" / CHECKPOINT).unlink(missing_ok=True)
    return {"out": str(out), **_headline(result), "seconds": round(secs, 1),
            "device": str(device), "precision": precision}


def nonfinite_advice(msg: str, lr: float) -> str:
    """The loop's non-finite-loss line with transfer's own advice (train-student's names
    --loss-weight, an option transfer does not have)."""
    head, sep, _ = msg.partition(": lower --lr")
    if not sep:
        return msg
    return f"{head}: lower --lr (this run used {lr:g}) and rerun into a new --out"


def _headline(r: dict) -> dict:
    head = {"student": r["student"]["label"], "dataset": Path(r["dataset"]["path"]).name,
            "task": r["protocol"].get("task", "classification"), "mode": r["protocol"]["mode"], "classes": r["dataset"]["n_classes"],
            "train/test": f"{r['dataset']['n_train']}/{r['dataset']['n_test']}",
            "measured at": fairness.headline(r["protocol"])}
    for k, s in r["summary"].items():
        std = "" if s["std"] is None else f" ± {s['std']:.2f}"
        head[k] = f"{s['mean']:.2f}{std} (n={s['n']})"
    return head
