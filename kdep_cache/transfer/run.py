"""``transfer``: one student x one downstream dataset x several seeds -> ``results.json``."""

from __future__ import annotations

import json
import logging
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ..cache.schema import FORMAT_VERSION, TRANSFER, now_iso, producer_info
from ..errors import InputError
from ..fsio import fingerprint, read_json, write_json, writer_lock
from ..runtime import autocast, prepare_model, resolve_device
from ..train.student import default_precision
from .data import Batches, open_downstream, test_transform
from .finetune import finetune
from .linear import C_GRID, MAX_ITER, VAL_FRACTION, extract_features, linear_probe
from .students import leaked, resolve_student

log = logging.getLogger(__name__)
RESULTS = "results.json"
MODES = ("linear", "finetune")


@dataclass
class TransferConfig:
    student: str
    data: str
    out: str
    arch: str | None = None
    label: str | None = None
    mode: str = "linear"
    epochs: int = 150              # paper: 150 epochs, lr x0.1 at epoch 50
    batch_size: int = 64
    lr: float = 0.001
    weight_decay: float = 5e-4
    momentum: float = 0.9
    schedule: str = "step"         # step: x0.1 every --lr-step epochs (default: each third)
    lr_step: float | None = None
    image_size: int | None = None  # default: the student's pre-training size, else 224
    seeds: tuple = (0, 1, 2)
    test_fraction: float = 0.2     # only for a dataset without train/test folders
    split_seed: int = 0
    workers: int = 2
    device: str = "auto"
    precision: str = "auto"
    resume: bool = False
    allow_leakage: bool = False


def _check(cfg: TransferConfig) -> None:
    if cfg.mode not in MODES:
        raise InputError(f"--mode must be one of {', '.join(MODES)}, got {cfg.mode!r}")
    if cfg.epochs < 1 or cfg.batch_size < 1 or cfg.workers < 0:
        raise InputError("--epochs and --batch-size must be >= 1, --workers >= 0")
    if not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds):
        raise InputError(f"--seeds must be distinct integers, got {list(cfg.seeds)}")
    if cfg.image_size is not None and cfg.image_size < 16:
        raise InputError(f"--image-size must be >= 16, got {cfg.image_size}")


def aggregate(values: list[float]) -> dict:
    """Mean and sample standard deviation (ddof=1; None for a single seed)."""
    vals = [float(v) for v in values]
    return {"mean": statistics.fmean(vals), "std": statistics.stdev(vals) if len(vals) > 1
            else None, "n": len(vals), "values": vals}


def _protocol(cfg: TransferConfig, size: int, mean, std, precision: str) -> dict:
    p = {"mode": cfg.mode, "image_size": size, "mean": mean, "std": std,
         "test_transform": f"Resize({int(round(size * 256 / 224))}) + CenterCrop({size})",
         "features": "post (pooled, final activation applied)", "precision": precision,
         "batch_size": cfg.batch_size, "seeds": list(cfg.seeds), "unit": "top-1 percent"}
    if cfg.mode == "linear":
        p.update(classifier="StandardScaler + LogisticRegression(lbfgs)", max_iter=MAX_ITER,
                 c_grid=list(C_GRID), c_selection=f"stratified {VAL_FRACTION:.0%} of train")
    else:
        p.update(epochs=cfg.epochs, lr=cfg.lr, momentum=cfg.momentum,
                 weight_decay=cfg.weight_decay, schedule=cfg.schedule, lr_step=cfg.lr_step,
                 optimizer="SGD", head="new linear layer on post",
                 train_transform=f"RandomResizedCrop({size}) + RandomHorizontalFlip")
    return p


def transfer(cfg: TransferConfig) -> dict:
    """Run every seed of ``cfg`` and write ``RESULT_DIR/results.json`` atomically."""
    _check(cfg)
    student = resolve_student(cfg.student, cfg.arch, cfg.label)
    data = open_downstream(cfg.data, cfg.test_fraction, cfg.split_seed)
    checked, overlap = leaked((student.sidecar or {}).get("lineage"), data.test_files())
    if overlap:
        msg = (f"LEAKAGE: {len(overlap)} of the {len(data.test)} downstream test images were "
               f"in {student.label}'s pre-training images (e.g. {overlap[0]})")
        log.warning("%s", msg)
        if not cfg.allow_leakage:
            raise InputError(msg + "; refusing: use a disjoint test split, or --allow-leakage")
    device = resolve_device(cfg.device)
    size = cfg.image_size or student.image_size or 224
    precision = default_precision(device, size) if cfg.precision == "auto" else cfg.precision
    autocast(device, precision)  # refuse e.g. fp16 on CPU before any work
    mean, std = student.mean_std
    protocol = _protocol(cfg, size, mean, std, precision)
    settings = json.loads(json.dumps({
        "student": student.to_json(), "dataset": data.to_json(), "protocol": protocol}))
    out = Path(cfg.out)
    with writer_lock(out):
        if (out / RESULTS).is_file():
            done = read_json(out / RESULTS)
            if done.get("settings_fingerprint") == fingerprint(settings):
                return {"out": str(out), "complete": True, "note": "already done",
                        **_headline(done)}
            raise InputError(f"{out} already holds transfer results with other settings; use "
                             "a new --out")
        t0 = time.perf_counter()
        per_seed = (_linear(student, data, protocol, cfg, device, precision)
                    if cfg.mode == "linear" else
                    _finetune(student, data, protocol, settings, cfg, out, device, precision))
        secs = time.perf_counter() - t0
        keys = ("test_top1",) if cfg.mode == "linear" else ("final_top1", "best_top1")
        result = {"format": TRANSFER, "format_version": FORMAT_VERSION, **settings,
                  "settings_fingerprint": fingerprint(settings),
                  "leakage": {"checked": checked, "overlap": len(overlap),
                              "allowed": bool(overlap) and cfg.allow_leakage,
                              "examples": overlap[:5]},
                  "seeds": per_seed, "summary": {k: aggregate([r[k] for r in per_seed])
                                                 for k in keys},
                  "primary": keys[0], "seconds": round(secs, 2), "device": str(device),
                  "producer": producer_info(), "argv": sys.argv, "created_at": now_iso()}
        write_json(out / RESULTS, result)
    return {"out": str(out), **_headline(result), "seconds": round(secs, 1),
            "device": str(device), "precision": precision}


def _headline(r: dict) -> dict:
    head = {"student": r["student"]["label"], "dataset": Path(r["dataset"]["path"]).name,
            "mode": r["protocol"]["mode"], "classes": r["dataset"]["n_classes"],
            "train/test": f"{r['dataset']['n_train']}/{r['dataset']['n_test']}"}
    for k, s in r["summary"].items():
        std = "" if s["std"] is None else f" ± {s['std']:.2f}"
        head[k] = f"{s['mean']:.2f}{std} (n={s['n']})"
    return head


def _linear(student, data, protocol, cfg, device, precision) -> list[dict]:
    tf = test_transform(protocol["image_size"], protocol["mean"], protocol["std"])
    size, pin = protocol["image_size"], device.type == "cuda"
    feats, results = None, []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        if feats is None or student.kind == "random":  # random init differs per seed
            net = prepare_model(student.build(len(data.classes), seed), device)
            feats = [extract_features(net, Batches(split, tf, size, cfg.batch_size, cfg.workers,
                                                   pin=pin), device, precision, desc=name)
                     for name, split in (("train", data.train), ("test", data.test))]
            del net
        r = linear_probe(feats[0], feats[1], seed)
        r["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("seed %d: linear test top-1 %.2f (C=%g)", seed, r["test_top1"], r["C"])
        results.append(r)
    return results


def _finetune(student, data, protocol, settings, cfg, out, device, precision) -> list[dict]:
    p = {**protocol, "workers": cfg.workers}
    results = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        net = student.build(len(data.classes), seed)
        seed_settings = json.loads(json.dumps({**settings, "seed": seed}))
        r = finetune(net, data, out / f"seed-{seed}", seed_settings, seed, device, precision,
                     cfg.resume, p)
        r["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("seed %d: final %.2f, best %.2f (epoch %d)", seed, r["final_top1"],
                 r["best_top1"], r["best_epoch"])
        results.append(r)
    return results
