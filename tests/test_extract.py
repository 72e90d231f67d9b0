"""Stage 1: format round trip, determinism, replay fidelity, resume, bad inputs."""

import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import extract_cfg

from kdep_cache.cache import RAW, Store
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.extract.run import extract
from kdep_cache.models import load_teacher
from kdep_cache.models.registry import NORMALIZATIONS
from kdep_cache.views.augment import normalize, render
from kdep_cache.views.images import ImageList, load_rgb


def _contents(d: Path) -> dict:
    out = {}
    for f in sorted(d.glob("shard-*.h5")):
        with h5py.File(f, "r") as h:
            for k in h:
                out[f"{f.name}/{k}"] = h[k][()]
    return out


def _same(a: Path, b: Path) -> None:
    ca, cb = _contents(a), _contents(b)
    assert ca.keys() == cb.keys() and ca
    for k in ca:
        assert ca[k].tobytes() == cb[k].tobytes(), k
    assert Store(a, RAW).fingerprint == Store(b, RAW).fingerprint


def test_round_trip_layout_and_provenance(images, tmp_path, teacher_file):
    s = extract(extract_cfg(images, tmp_path / "c", teacher_file, save_logits=True))
    assert s["complete"] and s["images"] == 12 and s["skipped"] == 0
    st = Store(tmp_path / "c", RAW)
    assert st.n_images == 12 and st.views == 2 and len(st.manifest["shards"]) == 3
    f = st.read("features", np.arange(12), view=1)
    assert f.shape == (12, 512) and f.dtype == np.float16 and np.isfinite(f).all()
    assert st.read("logits", np.array([11, 0]), view=0).shape == (2, 1000)
    ids = np.array([7, 2, 11, 5])  # arbitrary order, across shards
    assert np.array_equal(st.read("features", ids, view=0), st.read("features", np.arange(12), 0)[ids])
    with h5py.File(tmp_path / "c" / "shard-00001.h5", "r") as h:
        attrs = json.loads(h.attrs["kdep"])
        assert h["features"].shape == (2, 5, 512)
    assert attrs["format"] == RAW and attrs["teacher"]["feature_layer"].startswith("layer4")
    assert attrs["teacher"]["weights_sha256"] and attrs["start"] == 5 and attrs["stop"] == 10
    assert attrs["augment"]["scale"] == [0.08, 1.0] and attrs["images"] == st.manifest["settings"]["images"]
    imgs = json.loads((tmp_path / "c" / "images.json").read_text())
    assert imgs["classes"] == ["cat", "ship"] and imgs["labels"][:6] == [0] * 6


def test_two_runs_identical_across_workers_and_batch_sizes(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "a", teacher_file, workers=0, batch_size=4))
    extract(extract_cfg(images, tmp_path / "b", teacher_file, workers=2, batch_size=3))
    extract(extract_cfg(images, tmp_path / "c", teacher_file, workers=0, batch_size=12))
    _same(tmp_path / "a", tmp_path / "b")
    _same(tmp_path / "a", tmp_path / "c")


def test_cached_feature_equals_teacher_on_replayed_view(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "c", teacher_file, views=3))
    st = Store(tmp_path / "c", RAW)
    il = ImageList.from_json(json.loads((tmp_path / "c" / "images.json").read_text()))
    teacher, info = load_teacher("resnet18", teacher_file)
    mean, std = NORMALIZATIONS[info.norm]
    for v in range(3):
        params = st.read("params", np.arange(12), view=v)
        x = torch.stack([normalize(render(load_rgb(Path(il.root) / p), params[i], 32), mean, std)
                         for i, p in enumerate(il.paths)])
        with torch.no_grad():
            ref = teacher(x)["pre"].numpy()
        got = st.read("features", np.arange(12), view=v).astype(np.float32)
        assert np.allclose(got, ref, rtol=2e-3, atol=2e-3 * np.abs(ref).max())


def test_resume_after_kill_equals_uninterrupted(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "full", teacher_file))
    part = tmp_path / "part"
    extract(extract_cfg(images, part, teacher_file))
    # simulate a kill during the last shard: no manifest, last shard missing, a temp file left
    (part / "manifest.json").unlink()
    (part / "shard-00002.h5").unlink()
    (part / "shard-00002.json").unlink()
    (part / "shard-00002.h5.999.tmp").write_bytes(b"partial")
    with pytest.raises(ArtifactError, match="incomplete"):
        Store(part, RAW)
    s = extract(extract_cfg(images, part, teacher_file))
    assert s["images_processed"] == 2  # only the missing shard was redone
    _same(tmp_path / "full", part)


def test_other_settings_into_existing_cache_are_refused(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "c", teacher_file))
    with pytest.raises(InputError, match="views: 2 .existing. vs 3"):
        extract(extract_cfg(images, tmp_path / "c", teacher_file, views=3))
    again = extract(extract_cfg(images, tmp_path / "c", teacher_file))
    assert again["complete"]


def test_fraction_is_class_balanced_and_recorded(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "c", teacher_file, fraction=0.5))
    il = json.loads((tmp_path / "c" / "images.json").read_text())
    assert len(il["paths"]) == 6 and sorted(il["labels"]) == [0, 0, 0, 1, 1, 1]


def test_unreadable_files_are_skipped_and_listed(images, tmp_path, teacher_file):
    (images / "cat" / "broken.jpg").write_bytes(b"not an image at all")
    (images / "cat" / "empty.png").write_bytes(b"")
    s = extract(extract_cfg(images, tmp_path / "c", teacher_file))
    st = Store(tmp_path / "c", RAW)
    assert s["skipped"] == 2
    reasons = {x["path"]: x["reason"] for x in st.manifest["skipped"]}
    assert "zero-byte" in reasons["cat/empty.png"] and "unreadable" in reasons["cat/broken.jpg"]
    valid = np.concatenate([v for _, _, v in st.iter_shards("valid")])
    assert valid.sum() == 12 and len(valid) == 14


@pytest.mark.parametrize("args,msg", [
    (["--views", "0"], "--views must be >= 1"),
    (["--image-size", "16"], "too small"),
    (["--teacher", "nonet"], "unknown teacher"),
    (["--data", "/nonexistent/x"], "does not exist"),
])
def test_bad_input_gives_one_line_error(images, tmp_path, teacher_file, args, msg):
    base = {"--data": str(images), "--teacher": "resnet18", "--teacher-weights": teacher_file,
            "--out": str(tmp_path / "c"), "--image-size": "32", "--workers": "0"}
    for k, v in zip(args[::2], args[1::2]):
        base[k] = v
    r = CliRunner().invoke(main, ["extract"] + [x for kv in base.items() for x in kv])
    assert r.exit_code == 2, r.output
    assert msg in r.output and r.output.startswith("error:") and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "c").exists()


def test_empty_folder_and_misfit_weights(tmp_path, images, teacher_file):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images"):
        extract(extract_cfg(tmp_path / "empty", tmp_path / "c", teacher_file))
    import torchvision
    bad = tmp_path / "r34.pth"
    torch.save(torchvision.models.resnet34().state_dict(), bad)
    with pytest.raises(ArtifactError, match="unexpected keys layer1.2"):
        extract(extract_cfg(images, tmp_path / "c", str(bad)))
    nohead = tmp_path / "nohead.pth"
    sd = torch.load(teacher_file, weights_only=True)
    torch.save({"state_dict": {f"module.{k}": v for k, v in sd.items() if not k.startswith("fc.")}},
               nohead)
    s = extract(extract_cfg(images, tmp_path / "c2", str(nohead)))  # fc optional, prefixes stripped
    assert s["complete"]
    with pytest.raises(InputError, match="no classifier"):
        extract(extract_cfg(images, tmp_path / "c3", str(nohead), save_logits=True))


def test_ranks_write_disjoint_shards_of_one_cache(images, tmp_path, teacher_file):
    extract(extract_cfg(images, tmp_path / "one", teacher_file))
    r0 = extract(extract_cfg(images, tmp_path / "multi", teacher_file, rank=0, world_size=2))
    assert not r0["complete"] and not (tmp_path / "multi" / "manifest.json").exists()
    r1 = extract(extract_cfg(images, tmp_path / "multi", teacher_file, rank=1, world_size=2))
    assert r1["complete"]
    _same(tmp_path / "one", tmp_path / "multi")


def test_a_run_that_fails_before_its_first_shard_leaves_out_reusable(images, tmp_path,
                                                                      teacher_file, monkeypatch):
    """#23.4: config.json / images.json of a run that wrote no shard do not lock --out."""
    from kdep_cache.extract import run as ex
    out = tmp_path / "c"

    def oom(*a, **k):
        raise MemoryError("simulated")

    monkeypatch.setattr(ex, "extract_shard", oom)
    with pytest.raises(MemoryError):
        extract(extract_cfg(images, out, teacher_file, views=3))
    assert not out.exists()  # nothing left: not even the folder it created
    monkeypatch.undo()
    assert extract(extract_cfg(images, out, teacher_file, views=2))["complete"]
