"""Multi-layer KD (issue 27) through the stages: extract --layers/--grid (cached maps ==
the teacher's maps of the replayed views, flipped ones too; bad input refused before any
write; other layers refused on resume), fit-svd's per-layer PCA == numpy SVD, and the ML row
extract -> fit-svd -> train-student --objective kdep-ml -> transfer for a CNN and a ViT
teacher, with its train-time refusals and an exact resume."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import HERE, extract_cfg, interrupt_after_epoch_1
from ecosystem_models import hf_folder
from test_transfer import make_tree

from kdep_cache.cache import RAW, TARGETS, Store
from kdep_cache.cli import main
from kdep_cache.errors import InputError
from kdep_cache.extract.run import extract
from kdep_cache.fit.align import pts
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.models import load_teacher
from kdep_cache.models.taps import Taps, pool_map
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.transfer.run import TransferConfig, transfer
from kdep_cache.views.augment import PARAM_FIELDS
from kdep_cache.views.datasets import ViewDataset

LAYERS = ("layer2", "layer3")  # at 32 px: 4x4 and 2x2 (layer4 is 1x1)


@pytest.fixture(scope="module")
def ml(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("ml")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file, views=3, layers=LAYERS, grid=2))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), student="resnet18", null="zero"))
    return d


def _train(ml, out, **kw):
    base = dict(student="resnet18", out=str(out), targets=str(ml / "targets"), epochs=2,
                batch_size=4, workers=0, device="cpu", precision="fp32", lr=0.05,
                objective="kdep-ml")
    return TrainConfig(**{**base, **kw})


def test_cached_maps_are_the_teachers_maps_of_the_replayed_views(ml, teacher_file):
    st = Store(ml / "cache", RAW)
    s = st.manifest["settings"]
    assert (s["layers"], s["grid"]) == (list(LAYERS), 2)
    from kdep_cache.audit.info import info
    assert (info(ml / "cache")["layers"], info(ml / "targets")["layers"]["layer3"]) == (
        list(LAYERS), {"stage": "layer3", "dim": 256})  # `kdep-cache info` shows them
    for e in st.manifest["shards"]:  # listed with a digest like every other array
        assert {"map:layer2", "map:layer3"} <= set(e["arrays"])
    teacher, info = load_teacher("resnet18", teacher_file)
    taps = Taps(teacher, LAYERS)
    mean, std = info.mean_std
    ids = np.arange(st.n_images)
    flip = PARAM_FIELDS.index("flip")
    flipped = 0
    for v in range(st.views):
        x = torch.stack([ViewDataset(st_images(ml), ids, [v], 32, mean, std, spec=spec(st),
                                     seed=s["seed"])[i].views[0] for i in ids])
        with torch.no_grad():
            maps = teacher(x)["maps"]
            mirrored = teacher(x.flip(-1))["maps"]
        is_flipped = st.read("params", ids, view=v)[:, flip] > 0.5
        flipped += int(is_flipped.sum())
        for name in LAYERS:
            cached = torch.from_numpy(st.read(f"map:{name}", ids, view=v).astype(np.float32))
            assert cached.shape == (len(ids), 4, {"layer2": 128, "layer3": 256}[name])
            ref = pool_map(maps[name], 2)
            assert torch.allclose(cached, ref, atol=2e-2, rtol=2e-3), (v, name)
            if is_flipped.any():  # of the flipped tensor, not of the image before the flip
                far = (cached - pool_map(mirrored[name], 2)).abs()[torch.from_numpy(is_flipped)]
                assert far.max() > 0.1
    taps.remove()
    assert flipped > 0  # the check above ran on flipped views


def st_images(ml):
    from kdep_cache.cache.sidecar import read_image_list
    st = Store(ml / "cache", RAW)
    return read_image_list(st.dir, st.manifest["settings"])


def spec(st):
    from kdep_cache.views.augment import AugmentSpec
    return AugmentSpec.from_json(st.manifest["settings"]["augment"])


def test_bad_layers_and_grid_are_refused_before_anything_is_written(ml, tmp_path, teacher_file):
    out = tmp_path / "c"
    with pytest.raises(InputError, match="no layer 'layer5'; its layers: layer1, layer2, layer3"):
        extract(extract_cfg(ml / "images", out, teacher_file, layers=("layer5",)))
    with pytest.raises(InputError, match=r"--grid 2 is larger than layer4's 1x1 map at "
                                         "--image-size 32"):
        extract(extract_cfg(ml / "images", out, teacher_file, layers=("layer4",)))
    assert not out.exists()
    with pytest.raises(InputError, match="other settings.*layers"):  # resume: other layers
        extract(extract_cfg(ml / "images", ml / "cache", teacher_file, views=3,
                            layers=("layer2",), grid=2))
    r = CliRunner().invoke(main, ["extract", "--data", str(ml / "images"), "--teacher",
                                  "resnet18", "--teacher-weights", teacher_file, "--out",
                                  str(out), "--image-size", "32", "--layers", "layer3,layer9"])
    assert r.exit_code == 2 and r.output.strip().splitlines() == [
        "error: teacher resnet18 has no layer 'layer9'; its layers: layer1, layer2, layer3, "
        "layer4"], r.output
    assert not out.exists()


def _fake_ml_cache(out, feats, maps, depth):
    """A raw cache with given pooled features (K, N, D) and one map layer (K, N, G*G, C)."""
    from conftest import make_fake_cache

    from kdep_cache.cache.manifest import finalize_store
    from kdep_cache.cache.schema import MANIFEST, shard_name
    from kdep_cache.cache.store import write_shard
    make_fake_cache(out, feats, shard_size=feats.shape[1])
    (out / MANIFEST).unlink()
    cfg = json.loads((out / "config.json").read_text())
    cfg.update(layers=["layer1"], grid=2, layer_depths={"layer1": depth})
    (out / "config.json").write_text(json.dumps(cfg))
    k, n = feats.shape[:2]
    arrays = {"features": feats.astype(np.float32), "params": np.zeros((k, n, len(PARAM_FIELDS))),
              "valid": np.ones(n, np.uint8), "map:layer1": maps.astype(np.float32)}
    entry = write_shard(out / shard_name(0), {**cfg, "start": 0, "stop": n}, arrays)
    (out / "shard-00000.json").write_text(json.dumps({**entry, "start": 0, "stop": n,
                                                      "skipped": []}))
    finalize_store(out, cfg, 1, list(arrays), extra={"dim": feats.shape[2], "dtype": "float32"})
    return out


@pytest.mark.parametrize("transform", ["pts", "sn"])
def test_layer_pca_equals_numpy_svd_of_the_stacked_cells(tmp_path, transform):
    rng = np.random.default_rng(0)
    k, n, c = 2, 40, 80
    scales = np.linspace(3.0, 0.2, c)  # distinct variances: a well-defined basis
    maps = rng.normal(size=(k, n, 4, c)) * scales + rng.normal(size=c)
    cache = _fake_ml_cache(tmp_path / "c", rng.normal(size=(k, n, 512)), maps, 0.25)
    for student, width in (("resnet18", 64), ("timm:test_resnet", 32)):  # one cache, any width
        out = tmp_path / f"t-{transform}-{width}"
        fit_svd(FitConfig(str(cache), str(out), student=student, transform=transform,
                          null="zero", dtype="float32"))
        st = Store(out, TARGETS)
        assert st.manifest["settings"]["layers"] == {"layer1": {"stage": "layer1", "dim": width}}
        x = maps[0].reshape(-1, c).astype(np.float32).astype(np.float64)  # view 0, cells stacked
        xc = x - x.mean(0)
        v = np.linalg.svd(xc, full_matrices=False)[2][:width].T  # independent reference
        a = xc @ v
        ref = pts(a, 0.1, 3.0) if transform == "pts" else a / a.std(0, ddof=1)
        for view in range(k):
            got = st.read("targets:layer1", np.arange(n), view=view)
            assert got.shape == (n, 4, width)
            if view == 0:
                got = got.reshape(-1, width)
                sign = np.sign(np.sum(got * ref, axis=0))  # per component: up to sign
                assert np.allclose(got, ref * sign, atol=1e-4, rtol=1e-4)
        assert (out / "projection-layer1.h5").is_file() and "layer1" in st.manifest["layers"]


def test_verify_checks_the_layer_projections(ml, tmp_path):
    shutil.copytree(ml / "targets", tmp_path / "t")
    r = CliRunner().invoke(main, ["verify", str(tmp_path / "t")])
    assert r.exit_code == 0 and " 0 problems" in r.output and "extra" not in r.output
    import h5py
    with h5py.File(tmp_path / "t" / "projection-layer3.h5", "r+") as f:
        f["center"][0] += 1.0
    r = CliRunner().invoke(main, ["verify", str(tmp_path / "t")])
    assert r.exit_code != 0 and "corrupt: projection-layer3.h5" in r.output, r.output


def test_ml_row_end_to_end_cnn_teacher(ml, tmp_path):
    s = train_student(_train(ml, tmp_path / "run", layer_weights="layer3:0.5"))
    assert np.isfinite(s["final_loss"])
    rec = json.loads((tmp_path / "run" / "metrics.jsonl").read_text().splitlines()[-1])
    assert {"mse", "mse_layer2", "mse_layer3"} <= set(rec)
    side = json.loads((tmp_path / "run" / "student.json").read_text())
    assert side["settings"]["ml"] == {"grid": 2, "layer_weights": {"layer2": 1.0, "layer3": 0.5},
                                      "match": {"layer2": "layer2", "layer3": "layer3"}}
    ds = make_tree(tmp_path / "ds" / "train")
    make_tree(tmp_path / "ds" / "test", n=2, seed=1)
    res = transfer(TransferConfig(str(tmp_path / "run"), str(ds.parent), str(tmp_path / "tr"),
                                  image_size=32, seeds=(0,), workers=0, device="cpu",
                                  precision="fp32"))
    assert json.loads((tmp_path / "tr" / "results.json").read_text())["summary"], res


def test_train_time_refusals_write_nothing(ml, tmp_path):
    bad = [({"match": "layer3:layer4"}, "stage layer4 is 1x1 at --image-size 32, smaller than "
                                        "the targets' 2x2 grid"),
           ({"match": "layer3:layer1"}, "stage layer1 has 64 channels, fewer than the 256"),
           ({"match": "layer1:layer1"}, "--match names layer 'layer1'; the targets' layers"),
           ({"layer_weights": "layer4:1"}, "--layer-weights names layer 'layer4'"),
           ({"objective": "kdep-ml", "targets": None, "cache": str(ml / "cache")},
            "trains on aligned targets")]
    for kw, msg in bad:
        with pytest.raises(InputError, match=msg):
            train_student(_train(ml, tmp_path / "r", **kw))
        assert not (tmp_path / "r").exists()


def test_kdep_ml_resume_equals_uninterrupted(ml, tmp_path, monkeypatch):
    train_student(_train(ml, tmp_path / "full"))
    interrupt_after_epoch_1(monkeypatch, _train(ml, tmp_path / "part"))
    with pytest.raises(InputError, match="other settings: ml.layer_weights"):
        train_student(_train(ml, tmp_path / "part", layer_weights="2", resume=True))
    train_student(_train(ml, tmp_path / "part", resume=True))
    wf, wp = (torch.load(tmp_path / r / "student.pth", weights_only=True) for r in ("full", "part"))
    assert all(torch.equal(wf[k], wp[k]) for k in wf)


@pytest.mark.slow
def test_ml_row_end_to_end_vit_teacher(tmp_path):
    """A Hugging Face DINOv2 teacher's patch tokens (8x8 at 64 px) -> a timm CNN student's
    deepest stage (2x2 at 64 px), matched by relative depth."""
    shutil.copytree(HERE / "data" / "cifar", tmp_path / "images")
    _, d = hf_folder("dinov2-wide", tmp_path)
    extract(extract_cfg(tmp_path / "images", tmp_path / "c", None, teacher=f"hf:{d}",
                        image_size=64, layers=("tokens",), grid=2))
    fit_svd(FitConfig(str(tmp_path / "c"), str(tmp_path / "t"), student="timm:test_resnet",
                      null="zero"))
    st = Store(tmp_path / "t", TARGETS)
    assert st.manifest["settings"]["layers"] == {"tokens": {"stage": "layer4", "dim": 96}}
    s = train_student(TrainConfig(student="timm:test_resnet", out=str(tmp_path / "r"),
                                  targets=str(tmp_path / "t"), objective="kdep-ml", epochs=1,
                                  batch_size=4, workers=0, device="cpu", precision="fp32"))
    assert np.isfinite(s["final_loss"])
    ds = make_tree(tmp_path / "ds" / "train")
    make_tree(tmp_path / "ds" / "test", n=2, seed=1)
    transfer(TransferConfig(str(tmp_path / "r"), str(ds.parent), str(tmp_path / "tr"),
                            image_size=64, seeds=(0,), workers=0, device="cpu", precision="fp32"))
    assert json.loads((tmp_path / "tr" / "results.json").read_text())["summary"]
