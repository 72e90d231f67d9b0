"""Shared fixtures: a dozen real CIFAR-10 JPEGs, a random ResNet-18 teacher saved to a file,
and small helpers that run the stages through the library API."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision

HERE = Path(__file__).parent
# trainings compared bitwise across runs need the same intra-op threads: pin torch's default,
# which the CPU defaults would otherwise lower under load (kdep_cache/cpu_share.py); the tests
# of that choice set their own
os.environ.setdefault("KDEP_THREADS", str(torch.get_num_threads()))


@pytest.fixture(scope="session")
def teacher_file(tmp_path_factory) -> str:
    """A randomly initialised ResNet-18 state_dict (BN statistics perturbed so that the
    pre-activation feature has realistic, non-trivial statistics)."""
    torch.manual_seed(1234)
    net = torchvision.models.resnet18()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.bias.data.normal_(0, 0.1)
    path = tmp_path_factory.mktemp("teacher") / "r18.pth"
    torch.save(net.state_dict(), path)
    return str(path)


@pytest.fixture()
def images(tmp_path) -> Path:
    """12 real CIFAR-10 JPEGs (2 classes x 6) copied into a fresh folder."""
    dst = tmp_path / "images"
    shutil.copytree(HERE / "data" / "cifar", dst)
    return dst


def extract_cfg(data, out, teacher_file, **kw):
    from kdep_cache.extract.run import ExtractConfig
    base = dict(data=str(data), teacher="resnet18", teacher_weights=teacher_file, out=str(out),
                views=2, image_size=32, batch_size=4, workers=0, device="cpu", shard_size=5)
    base.update(kw)
    return ExtractConfig(**base)


def make_fake_cache(out: Path, feats: np.ndarray, shard_size: int, labels=None) -> Path:
    """A raw cache whose features are given (K, N, D) — for testing fit-svd in isolation."""
    from kdep_cache.cache.manifest import finalize_store, load_or_init_config, record_shard
    from kdep_cache.cache.schema import RAW, shard_name
    from kdep_cache.cache.store import write_shard
    from kdep_cache.views.augment import N_PARAMS, PARAM_FIELDS
    k, n, d = feats.shape
    out.mkdir(parents=True, exist_ok=True)
    settings = {"format": RAW, "teacher": {"name": "synthetic", "dim": d, "norm": "imagenet",
                                           "num_classes": None},
                "augment": {}, "seed": 0, "views": k, "image_size": 32, "dtype": "float32",
                "n_images": n, "images": "synthetic", "param_fields": list(PARAM_FIELDS)}
    paths = [f"img{i:05d}.png" for i in range(n)]
    load_or_init_config(out, settings, {"root": str(out), "paths": paths,
                                        "labels": labels or [-1] * n, "classes": []})
    for s, lo in enumerate(range(0, n, shard_size)):
        hi = min(n, lo + shard_size)
        arrays = {"features": feats[:, lo:hi].astype(np.float32),
                  "params": np.zeros((k, hi - lo, N_PARAMS)), "valid": np.ones(hi - lo, np.uint8)}
        entry = write_shard(out / shard_name(s), {**settings, "start": lo, "stop": hi}, arrays)
        record_shard(out, s, entry, lo, hi)
    finalize_store(out, settings, -(-n // shard_size), ["features", "params", "valid"],
                   extra={"dim": d, "dtype": "float32"})
    return out


def interrupt_after_epoch_1(monkeypatch, cfg) -> None:
    """Run ``train_student(cfg)`` killed (KeyboardInterrupt) right after epoch 1's checkpoint;
    the checkpoint writer is restored afterwards, so the next call can ``--resume``."""
    from kdep_cache.train import loop
    from kdep_cache.train.student import train_student
    real, calls = loop.save_checkpoint, {"n": 0}

    def crash_after_first(run_dir, state):
        real(run_dir, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        train_student(cfg)
    monkeypatch.setattr(loop, "save_checkpoint", real)

