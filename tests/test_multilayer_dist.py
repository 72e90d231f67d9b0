"""kdep-ml under torchrun (gloo, 2 CPU ranks): the student's stage hooks survive
DistributedDataParallel and --sync-bn, and 2 ranks x 4 images == 1 process x 8 images."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torchvision
from test_dist import CIFAR, _extract_args, _params, _train_args, one, torchrun

pytestmark = pytest.mark.slow


def test_torchrun_kdep_ml_sync_bn_equals_one_process(tmp_path):
    shutil.copytree(CIFAR, tmp_path / "images")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    one(*_extract_args(tmp_path / "images", tmp_path / "cache", tmp_path / "r18.pth"),
        "--layers", "layer2,layer3")
    one("fit-svd", "--cache", tmp_path / "cache", "--out", tmp_path / "targets", "--student",
        "resnet18", "--null", "zero")
    ml = ("--objective", "kdep-ml", "--layer-weights", "layer2:0.5")
    one(*_train_args(tmp_path, tmp_path / "one", *ml))
    torchrun(*_train_args(tmp_path, tmp_path / "ddp", "--sync-bn", *ml))
    a, b = _params(tmp_path / "one"), _params(tmp_path / "ddp")
    assert float((a - b).norm() / a.norm()) < 1e-5
    la, lb = ([json.loads(x) for x in (tmp_path / r / "metrics.jsonl").open()]
              for r in ("one", "ddp"))
    for key in ("loss", "mse_layer2", "mse_layer3"):  # the map terms are computed on each rank
        assert np.allclose([r[key] for r in la], [r[key] for r in lb], rtol=1e-4), key
