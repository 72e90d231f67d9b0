"""Stage 2: exact replay, cached == online targets, determinism, resume, objectives, errors."""

import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from conftest import HERE, extract_cfg, interrupt_after_epoch_1

from kdep_cache.cache import RAW, TARGETS, Store
from kdep_cache.errors import InputError, LineageError, TrainingError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.train.feed import Feed
from kdep_cache.train.sources import open_source
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.views.datasets import ViewDataset


@pytest.fixture(scope="module")
def pipe(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("pipe")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    # pack none: these tests are about replay from the folder (the pack: tests/test_pack.py)
    extract(extract_cfg(d / "images", d / "cache", teacher_file, views=3, pack="none",
                        save_logits=True,
                        save_post=True))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), dim=512, aligner="cs-var"))
    return d


def _cfg(pipe, out, **kw):
    base = dict(student="resnet18", out=str(out), targets=str(pipe / "targets"), epochs=2,
                batch_size=4, workers=0, device="cpu", precision="fp32", lr=0.05)
    base.update(kw)
    return TrainConfig(**base)


def _weights(run):
    return torch.load(Path(run) / "student.pth", weights_only=True)


def test_replayed_view_is_bitwise_the_tensor_the_teacher_saw(pipe):
    src = open_source(str(pipe / "targets"), None, None, "targets", None, 0)
    st = Store(pipe / "cache", RAW)
    s = st.manifest["settings"]
    for epoch in (0, 1, 2, 4):
        eb = Feed(src, "targets", batch_size=5, workers=0, seed=0, pin=False).epoch(epoch)
        v = epoch % 3
        assert eb.view == v
        for b in eb.loader:
            ids, x = b.ids, b.views
            # what extract rendered: parameters sampled from (seed, view, id) at extraction
            ref = ViewDataset(src.images, ids.numpy(), [v], s["image_size"], src.mean, src.std,
                              spec=src.spec, seed=s["seed"])
            x_ref = torch.stack([ref[j].views[0] for j in range(len(ids))])
            assert torch.equal(x[:, 0], x_ref)


def test_persistent_workers_serve_every_epoch_identically(pipe):
    """One set of 2 workers kept across epochs gives, epoch by epoch, exactly the batches of
    the in-process loader (the view and order are set in the main process each epoch)."""
    src = open_source(str(pipe / "targets"), None, None, "targets", None, 0)
    pooled = Feed(src, "targets", batch_size=4, workers=2, seed=3, pin=False)
    assert pooled.loader.persistent_workers
    for epoch in (0, 1, 2, 5):
        ref = list(Feed(src, "targets", 4, 0, 3, False).epoch(epoch))
        got = list(pooled.epoch(epoch))
        assert len(got) == len(ref) > 0
        for b, r in zip(got, ref):
            assert torch.equal(b.x, r.x) and torch.equal(b.target, r.target)
            assert b.weight == r.weight == 1.0


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_cached_targets_equal_online_teacher_on_replayed_views(tmp_path, teacher_file, images,
                                                               dtype):
    """The error budget is the storage rounding of the raw feature (float16: ~5e-4 relative;
    float32: ~1e-7) in the aligned space. PTS amplifies any rounding for near-zero values
    (its slope is unbounded at 0), so targets are compared directly only away from 0."""
    extract(extract_cfg(images, tmp_path / "c", teacher_file, views=8, dtype=dtype))
    fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), dim=64, fit_views="all",
                      dtype="float32"))
    from kdep_cache.fit.run import load_projection
    from kdep_cache.models import load_teacher
    proj, _ = load_projection(tmp_path / "t" / "projection.h5")
    teacher, _ = load_teacher("resnet18", teacher_file)
    src = open_source(str(tmp_path / "t"), None, None, "targets", None, 0)
    t_, n_ = proj.spec.pts_t, proj.spec.pts_n
    for epoch in (0, 7):
        for b in Feed(src, "targets", 6, 0, 0, False).epoch(epoch):
            x, t = b.x, b.target
            with torch.no_grad():
                f = teacher(x)["pre"]
                online = proj.apply_torch(f)
            aligned_cached = torch.sign(t) * t_ * t.abs() ** n_  # PTS inverted
            aligned_online = (f.double() - torch.from_numpy(proj.center)) @ torch.from_numpy(
                proj.weight)
            err = (aligned_cached.double() - aligned_online).norm(dim=1)
            budget = 1e-3 if dtype == "float16" else 1e-5
            assert (err <= budget * f.double().norm(dim=1)).all()
            big = online.abs() > 1.5  # away from 0 PTS is tame (slope <= 1.5): compare directly
            tol = 2e-3 if dtype == "float16" else 1e-5
            assert torch.allclose(t[big], online[big], rtol=tol, atol=tol)


def test_training_is_deterministic_and_saves_a_plain_torchvision_state_dict(pipe, tmp_path):
    a = train_student(_cfg(pipe, tmp_path / "a"))
    train_student(_cfg(pipe, tmp_path / "b"))
    wa, wb = _weights(tmp_path / "a"), _weights(tmp_path / "b")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    net = torchvision.models.resnet18()
    net.load_state_dict(wa, strict=True)
    side = (tmp_path / "a" / "student.json").read_text()
    assert Store(pipe / "targets", TARGETS).fingerprint in side
    assert a["epochs"] == 2 and len((tmp_path / "a" / "metrics.jsonl").read_text().splitlines()) == 2


def test_resume_equals_uninterrupted(pipe, tmp_path, monkeypatch):
    train_student(_cfg(pipe, tmp_path / "full", epochs=3))
    interrupt_after_epoch_1(monkeypatch, _cfg(pipe, tmp_path / "part", epochs=3))
    with pytest.raises(InputError, match="--resume"):
        train_student(_cfg(pipe, tmp_path / "part", epochs=3))
    with pytest.raises(InputError, match="other settings: lr"):
        train_student(_cfg(pipe, tmp_path / "part", epochs=3, lr=0.01, resume=True))
    train_student(_cfg(pipe, tmp_path / "part", epochs=3, resume=True))
    wf, wp = _weights(tmp_path / "full"), _weights(tmp_path / "part")
    assert all(torch.equal(wf[k], wp[k]) for k in wf)
    assert (tmp_path / "part" / "metrics.jsonl").read_text().count("\n") == 3


def test_distillation_loss_falls_well_below_its_start(pipe, tmp_path):
    s = train_student(_cfg(pipe, tmp_path / "r", epochs=10, lr=0.1, schedule="cosine",
                           loss_weight=1.0, batch_size=6))
    assert s["final_loss"] < 0.5 * s["first_loss"], s


@pytest.mark.parametrize("objective,extra", [
    ("conv1x1-pre", {}), ("conv1x1-post", {}), ("conv1x1-margin", {}), ("logits", {}),
    ("supervised", {}), ("supervised-data", {}), ("online", {})])
def test_every_objective_runs(pipe, tmp_path, objective, extra, teacher_file):
    kw = dict(epochs=1)
    if objective in ("conv1x1-pre", "conv1x1-post", "conv1x1-margin", "logits", "supervised"):
        kw.update(targets=None, cache=str(pipe / "cache"))
    if objective == "supervised-data":
        objective = "supervised"
        kw.update(targets=None, data=str(pipe / "images"), image_size=32)
    s = train_student(_cfg(pipe, tmp_path / objective, objective=objective, **kw))
    assert np.isfinite(s["final_loss"])
    torchvision.models.resnet18(num_classes=2 if objective == "supervised" else 1000
                                ).load_state_dict(_weights(tmp_path / objective), strict=True)


def test_teacher_is_never_loaded_for_cached_objectives(pipe, tmp_path, monkeypatch):
    import kdep_cache.models as models
    import kdep_cache.models.registry as registry

    def boom(*a, **k):
        raise AssertionError("the teacher was loaded")

    monkeypatch.setattr(registry, "load_teacher", boom)
    monkeypatch.setattr(models, "load_teacher", boom)
    monkeypatch.setattr(registry, "_load_lite", boom)
    monkeypatch.setattr(registry, "_load_torchvision", boom)
    monkeypatch.setattr(torch.jit, "load", boom)
    train_student(_cfg(pipe, tmp_path / "k", epochs=1))
    train_student(_cfg(pipe, tmp_path / "l", epochs=1, targets=None, cache=str(pipe / "cache"),
                       objective="logits"))


def test_bad_inputs(pipe, tmp_path):
    with pytest.raises(InputError, match="width 512 but mobilenet_v2 has 1280.*fit-svd"):
        train_student(_cfg(pipe, tmp_path / "w", student="mobilenet_v2"))
    with pytest.raises(InputError, match="unknown student 'vgg'.*known: resnet18"):
        train_student(_cfg(pipe, tmp_path / "u", student="vgg"))
    moved = tmp_path / "moved"
    shutil.copytree(pipe / "images", moved)
    for p in sorted(moved.glob("cat/*.jpg"))[:3]:
        p.unlink()
    with pytest.raises(LineageError, match="3 of the 12 cached images are missing"):
        train_student(_cfg(pipe, tmp_path / "m", data=str(moved)))
    with pytest.raises(InputError, match="--loss-weight must be a finite number"):
        train_student(_cfg(pipe, tmp_path / "i", loss_weight=float("inf")))
    # a finite weight whose float32 loss overflows: caught at the first step, and the message
    # does not point at a checkpoint that was never written
    with pytest.raises(TrainingError, match="non-finite loss at epoch 1, step 1; no checkpoint"):
        train_student(_cfg(pipe, tmp_path / "n", loss_weight=1e39))
    with pytest.raises(InputError, match="pass --targets"):
        train_student(_cfg(pipe, tmp_path / "t", targets=None))
    with pytest.raises(InputError, match="no teacher logits"):
        extract_dir = tmp_path / "nolog"
        shutil.copytree(pipe / "cache", extract_dir)
        import json
        m = json.loads((extract_dir / "manifest.json").read_text())
        m["arrays"] = ["features", "params", "valid"]
        (extract_dir / "manifest.json").write_text(json.dumps(m))
        train_student(_cfg(pipe, tmp_path / "x", targets=None, cache=str(extract_dir),
                           objective="logits"))
