"""Resume and the run's shape (issue 22 items 4, 5, 6, 9): exact with dropout, refused on
another world size or --sync-bn, rank 0 decides for every rank, no epoch without a step."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import HERE, interrupt_after_epoch_1

from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.runtime import dist
from kdep_cache.train import checkpoint, loop
from kdep_cache.train.checkpoint import settings_diffs, shared_start
from kdep_cache.train.student import TrainConfig, train_student


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp("resume") / "images"
    shutil.copytree(HERE / "data" / "cifar", d)
    return d


def _cfg(data, out, **kw):
    base = dict(student="resnet18", out=str(out), data=str(data), objective="supervised",
                epochs=3, batch_size=4, workers=0, device="cpu", precision="fp32", lr=0.05,
                image_size=32)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run):
    return torch.load(run / "student.pth", weights_only=True)


def _ranks(monkeypatch, world: int):
    """train-student as rank 0 of ``world`` (no process group: collectives are no-ops)."""
    monkeypatch.setattr(dist, "context", lambda device="auto": dist.Dist(0, world))


def test_dropout_student_resumes_bitwise(data, tmp_path, monkeypatch):
    """MobileNetV2's classifier has dropout: the random streams travel in the checkpoint."""
    kw = dict(student="mobilenet_v2", epochs=3)
    train_student(_cfg(data, tmp_path / "full", **kw))
    interrupt_after_epoch_1(monkeypatch, _cfg(data, tmp_path / "part", **kw))
    torch.manual_seed(99)  # whatever the process did in between
    train_student(_cfg(data, tmp_path / "part", resume=True, **kw))
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_world_size_and_sync_bn_are_recorded_and_kept_on_resume(data, tmp_path, monkeypatch,
                                                                 caplog):
    run = tmp_path / "r"
    interrupt_after_epoch_1(monkeypatch, _cfg(data, run))
    _ranks(monkeypatch, 2)
    with pytest.raises(InputError, match=r"world_size: 1 \(existing\) vs 2 \(now\)") as e:
        train_student(_cfg(data, run, resume=True))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(dist, "context", lambda device="auto": dist.Dist())
    # a run written before the fields existed resumes (whatever the ranks were)
    state = torch.load(run / "checkpoint.pt", weights_only=True)
    state.pop("digest")
    old = json.loads(state["settings"])
    assert old["world_size"] == 1 and old["sync_bn"] is False
    del old["world_size"], old["sync_bn"]
    checkpoint.save_checkpoint(run, {**state, "settings": json.dumps(old)})
    s = train_student(_cfg(data, run, resume=True, sync_bn=True))  # no effect on one process
    said = [r.getMessage() for r in caplog.records if "--sync-bn" in r.getMessage()]
    assert len(said) == 1 and "does not apply to one process" in said[0], said
    side = json.loads((run / "student.json").read_text())
    assert side["settings"]["world_size"] == 1 and side["settings"]["sync_bn"] is False
    assert s["lr"] == 0.05 and s["dropped_per_epoch"] == 0 and s["mean_images_per_s"] > 0


def test_toggling_sync_bn_under_several_ranks_is_refused(data, tmp_path, monkeypatch):
    _ranks(monkeypatch, 2)
    run = tmp_path / "r"
    interrupt_after_epoch_1(monkeypatch, _cfg(data, run))
    with pytest.raises(InputError, match=r"sync_bn: False \(existing\) vs True \(now\)"):
        train_student(_cfg(data, run, resume=True, sync_bn=True))


def test_settings_diffs_accept_older_runs_only_for_the_new_fields():
    new = {"lr": 0.1, "world_size": 2, "sync_bn": True}
    assert settings_diffs({"lr": 0.1}, new) == []
    assert settings_diffs({"lr": 0.1, "world_size": 1}, new) == [
        "world_size: 1 (existing) vs 2 (now)"]
    assert settings_diffs({"lr": 0.2}, new) == ["lr: 0.2 (existing) vs 0.1 (now)"]


def test_a_batch_smaller_than_two_per_rank_is_refused_up_front(data, tmp_path, monkeypatch):
    _ranks(monkeypatch, 2)
    with pytest.raises(InputError, match="--batch-size 3 .* at least 4"):
        train_student(_cfg(data, tmp_path / "r", batch_size=3))
    assert not (tmp_path / "r" / "checkpoint.pt").exists()


def test_an_epoch_without_a_step_is_one_line_and_no_checkpoint(data, tmp_path, monkeypatch):
    """The loop itself refuses an epoch with no batch (e.g. fewer images than 2 per rank)."""
    from kdep_cache.models import FeatureNet, build_student
    from kdep_cache.train.objectives import Supervised
    net, obj = FeatureNet(build_student("resnet18", num_classes=2)), Supervised(1.0)
    opt = loop.sgd(net.parameters(), 0.1, 0.9, 0.0)
    for batches in (lambda e: [], lambda e: iter(())):  # sized and unsized
        with pytest.raises(InputError, match="epoch 1 has no training step"):
            loop.train(net, obj, batches, opt, loop.Schedule(2, 0.1),
                       loop.RunContext(tmp_path, {}, torch.device("cpu"), "fp32"))
    assert not (tmp_path / "checkpoint.pt").exists()


class _FakeDist:
    """A rank of 2 whose broadcast returns ``box`` (what rank 0 sent) and records its input."""

    enabled, world_size = True, 2

    def __init__(self, rank, box=None):
        self.rank, self.main, self.box, self.sent = rank, rank == 0, box, []

    def broadcast_object(self, obj, what):
        self.sent.append(obj)
        return obj if self.main else self.box


def test_rank_0_alone_reads_the_checkpoint_and_every_rank_gets_its_start():
    d0 = _FakeDist(0)
    assert shared_start(d0, lambda: {"epoch": 3}, "t") == {"epoch": 3}
    assert d0.sent == [{"ok": True, "start": {"epoch": 3}}]

    def never():
        raise AssertionError("a rank other than 0 read its own --out")

    assert shared_start(_FakeDist(1, d0.sent[0]), never, "t") == {"epoch": 3}
    d0 = _FakeDist(0)

    def refuse():
        raise InputError("r holds an interrupted run (epoch 1): add --resume")

    with pytest.raises(InputError, match="add --resume"):
        shared_start(d0, refuse, "t")
    assert d0.sent[0]["ok"] is False
    with pytest.raises(InputError, match="^rank 0 could not start the run: r holds") as e:
        shared_start(_FakeDist(1, d0.sent[0]), never, "t")
    assert "\n" not in str(e.value)
    with pytest.raises(ArtifactError, match="rank 0 could not start the run: it stopped"):
        shared_start(_FakeDist(1, {"ok": False, "error": "it stopped"}), never, "t")
