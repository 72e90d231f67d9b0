"""Under torchrun every rank draws its own random crops, flips and dropout in fine-tuning
(issue 22 item 8); one process and rank 0 draw exactly as before."""

from __future__ import annotations

import shutil

import torch
from conftest import HERE

from kdep_cache.models import FeatureNet, build_student
from kdep_cache.runtime.dist import Dist, rank_seed
from kdep_cache.transfer.classification import finetune as ft
from kdep_cache.transfer.classification.data import open_downstream


def test_rank_seed_keeps_rank_0_and_separates_the_others():
    assert rank_seed(12345, 0) == 12345
    seeds = [rank_seed(12345, r) for r in range(8)]
    assert len(set(seeds)) == 8 and seeds == [rank_seed(12345, r) for r in range(8)]
    assert rank_seed(12346, 1) != seeds[1]
    assert all(0 <= s < 2 ** 63 for s in seeds)  # what torch.manual_seed takes


def test_finetune_ranks_draw_different_crops(tmp_path, monkeypatch):
    """The first training batch of rank 0 and rank 1 of 2: rank 1's j-th image must not get
    rank 0's j-th crop and flip (the same draw on every rank was the defect)."""
    shutil.copytree(HERE / "data" / "cifar", tmp_path / "images")
    data = open_downstream(str(tmp_path / "images"))
    p = {"image_size": 32, "mean": (0.5,) * 3, "std": (0.25,) * 3, "batch_size": 8,
         "workers": 0, "lr": 0.1, "momentum": 0.9, "weight_decay": 0.0, "epochs": 1,
         "schedule": "step", "lr_step": None}
    draws = {}

    def fake_train(net, objective, batches, optimizer, schedule, run, *a, **k):
        torch.manual_seed(999)  # whatever came before: batches() must seed
        b = batches(0)
        draws[run.dist.rank] = torch.rand(8)  # the stream the transforms draw from next
        assert len(b) >= 1
        return [{"epoch": 1, "test_top1": 0.0, "loss": 0.0}]

    monkeypatch.setattr(ft, "train", fake_train)
    for rank in (0, 1):
        net = FeatureNet(build_student("resnet18", num_classes=2))
        ft.finetune(net, data, tmp_path / f"r{rank}", {"x": 1}, 3, torch.device("cpu"), "fp32",
                    False, p, Dist(rank, 2))
    assert not torch.equal(draws[0], draws[1])
    torch.manual_seed(3 * 1_000_003 + 0)
    assert torch.equal(draws[0], torch.rand(8))  # rank 0 (and one process) as before
