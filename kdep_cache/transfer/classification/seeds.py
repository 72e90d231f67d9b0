"""The seeds of a classification transfer: the linear probe (features sharded across torchrun
ranks, gathered, fitted once on rank 0) and the fine-tune (one run dir per seed)."""

from __future__ import annotations

import json
import logging
import time

import numpy as np

from ...runtime.device import prepare_model
from ...views.images import ImageList
from .data import Batches, test_transform
from .finetune import finetune
from .linear import extract_features, linear_probe

log = logging.getLogger(__name__)


def _features(net, split, tf, size, cfg, pin, device, precision, name, d):
    """Pooled features of ``split``; under torchrun each rank extracts every
    ``world_size``-th image and the parts are gathered back into the split's order."""
    if not d.enabled:
        return extract_features(net, Batches(split, tf, size, cfg.batch_size, cfg.workers,
                                             pin=pin), device, precision, desc=name)
    ids = list(range(d.rank, len(split), d.world_size))
    part = ImageList(split.root, [split.paths[i] for i in ids], [split.labels[i] for i in ids],
                     split.classes)
    x, y = extract_features(net, Batches(part, tf, size, cfg.batch_size, cfg.workers, pin=pin),
                            device, precision, desc=name)
    parts = d.all_gather_object((ids, x, y), f"transfer: gathering {name} features")
    order = np.concatenate([np.asarray(i, dtype=np.int64) for i, _, _ in parts])
    inv = np.argsort(order)
    return (np.concatenate([f for _, f, _ in parts])[inv],
            np.concatenate([lab for _, _, lab in parts])[inv])


def linear_seeds(student, data, protocol, cfg, device, precision, d) -> list[dict]:
    """Features sharded across torchrun ranks; rank 0 fits the probe, every rank gets it."""
    tf = test_transform(protocol["image_size"], protocol["mean"], protocol["std"])
    size, pin = protocol["image_size"], device.type == "cuda"
    feats, results = None, []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        if feats is None or student.kind == "random":  # random init differs per seed
            net = prepare_model(student.build(len(data.classes), seed), device)
            feats = [_features(net, split, tf, size, cfg, pin, device, precision, name, d)
                     for name, split in (("train", data.train), ("test", data.test))]
            del net
        r = (linear_probe(feats[0], feats[1], seed, classes=data.classes) if d.main else None)
        r = d.broadcast_object(r, "transfer: sharing the probe's result")
        r["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("seed %d: linear test top-1 %.2f (C=%g)", seed, r["test_top1"], r["C"])
        results.append(r)
    return results


def finetune_seeds(student, data, protocol, settings, cfg, out, device, precision, d
              ) -> list[dict]:
    p = {**protocol, "workers": cfg.workers}
    results = []
    for seed in cfg.seeds:
        t0 = time.perf_counter()
        net = student.build(len(data.classes), seed)
        seed_settings = json.loads(json.dumps({**settings, "seed": seed}))
        r = finetune(net, data, out / f"seed-{seed}", seed_settings, seed, device, precision,
                     cfg.resume, p, d)
        r["seconds"] = round(time.perf_counter() - t0, 2)
        log.info("seed %d: final %.2f, best %.2f (epoch %d)", seed, r["final_top1"],
                 r["best_top1"], r["best_epoch"])
        results.append(r)
    return results
