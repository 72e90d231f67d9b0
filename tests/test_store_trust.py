"""Issue 23 (6, 7, 9, 13, 17): a store's manifest is recomputed where it is read (its
fingerprint from its settings and shard digests, the shard digests from the arrays, the image
list's labels from its paths), a missing digest is refused, verify never follows a listed file
out of the store, valid JSON of another shape is one line, and a shard changed in place during
training is refused as the next epoch starts."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import h5py
import pytest
from click.testing import CliRunner
from conftest import HERE, extract_cfg

from kdep_cache.audit.verify import verify
from kdep_cache.cache import RAW, TARGETS, Store
from kdep_cache.cache import store as store_mod
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.storage.fsio import fingerprint
from kdep_cache.train import loop
from kdep_cache.train.sources import open_source
from kdep_cache.train.student import TrainConfig, train_student

TRAIN = dict(epochs=1, batch_size=6, workers=0, device="cpu", precision="fp32", lr=0.01)


@pytest.fixture(scope="module")
def made(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("store_trust")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), dim=512, aligner="identity"))
    train_student(TrainConfig("resnet18", str(d / "run"), targets=str(d / "targets"), **TRAIN))
    return d


def cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def _copy(made, tmp_path, name="cache") -> Path:
    shutil.copytree(made / name, tmp_path / name)
    return tmp_path / name


def _edit_manifest(store: Path, edit, refingerprint: bool = False) -> None:
    m = json.loads((store / "manifest.json").read_text())
    edit(m)
    if refingerprint:  # a consistent manifest: only the data check can tell
        m["fingerprint"] = fingerprint({"settings": m["settings"],
                                        "contents": [e["content"] for e in m["shards"]]})
    (store / "manifest.json").write_text(json.dumps(m))


# ---------------------------------------------------------------- 13: paths stay in the store

@pytest.mark.parametrize("listed", ["/etc/hostname", "../outside.h5", "shard-00001.h5"])
def test_verify_never_follows_a_listed_file_out_of_the_store(made, tmp_path, listed):
    c = _copy(made, tmp_path)
    (tmp_path / "outside.h5").write_bytes(b"x" * 12345)
    _edit_manifest(c, lambda m: m["shards"][0].update(file=listed), refingerprint=True)
    rep = verify(c)
    assert not rep["ok"] and rep["problems"][0].startswith("corrupt: manifest.json (shard slot 0")
    # not followed: only slot 1's own shard-00001.h5 is checked
    assert sum(f["file"] == listed for f in rep["files"]) == (listed == "shard-00001.h5")
    code, text = cli("verify", c)
    assert code == 1 and "not followed" in text and "12345" not in text
    with pytest.raises(ArtifactError, match="outside the store or out of order"):
        Store(c, RAW)


# ---------------------------------------------------------------- 7: recomputed where read

def test_an_edited_setting_is_refused_by_every_reader(made, tmp_path):
    c = _copy(made, tmp_path)
    _edit_manifest(c, lambda m: m["settings"].update(image_size=64))
    with pytest.raises(ArtifactError, match="does not match its own fingerprint"):
        Store(c, RAW)
    code, text = cli("fit-svd", "--cache", c, "--out", tmp_path / "t", "--dim", "8")
    assert code == 2 and "does not match its own fingerprint" in text
    assert verify(c)["problems"] == ["corrupt: manifest.json (fingerprint does not match its "
                                     "own contents)"]


def test_a_content_digest_unlike_the_data_is_refused(made, tmp_path):
    """A manifest whose content digest was replaced (and fingerprint recomputed over it): the
    file's sha256 matches, but what the fingerprint claims is not the data."""
    c = _copy(made, tmp_path)
    _edit_manifest(c, lambda m: m["shards"][1].update(content="0" * 64), refingerprint=True)
    with pytest.raises(ArtifactError, match="shard-00001.h5: its arrays are not the content"):
        fit_svd(FitConfig(str(c), str(tmp_path / "t"), dim=8))
    rep = verify(c)
    assert rep["problems"] == ["corrupt: shard-00001.h5 (its arrays are not the digests the "
                               "manifest records (content))"]


def test_a_missing_array_digest_is_refused_not_skipped(made, tmp_path):
    c = _copy(made, tmp_path)
    _edit_manifest(c, lambda m: m["shards"][0]["arrays"].pop("params"))
    with pytest.raises(ArtifactError, match="records no digest of 'params'"):
        open_source(None, str(c), None, "features", None, 0)
    assert "corrupt: shard-00000.h5" in verify(c)["problems"][0]


def test_a_store_from_before_per_array_digests_is_checked_whole(made, tmp_path):
    """Backward compatible: entries with no per-array digests at all are checked by the
    sha256 of the file, which they record."""
    c = _copy(made, tmp_path)
    _edit_manifest(c, lambda m: [e.pop("arrays") for e in m["shards"]])
    src = open_source(None, str(c), None, "features", None, 0)
    assert len(src.ids) == 12 and verify(c)["ok"]
    with open(c / "shard-00001.h5", "r+b") as f:  # and a changed file is still refused
        f.seek(-8, 2)
        f.write(b"\xff" * 8)
    with pytest.raises(ArtifactError, match="shard-00001.h5 does not match its checksum"):
        open_source(None, str(c), None, "features", None, 0)


# ---------------------------------------------------------------- 6: labels and classes

@pytest.mark.parametrize("edit", ["labels", "classes"])
def test_tampered_labels_or_classes_in_images_json_are_refused(made, tmp_path, edit):
    c = _copy(made, tmp_path)
    doc = json.loads((c / "images.json").read_text())
    if edit == "labels":
        doc["labels"] = [1 - x for x in doc["labels"]]
    else:
        doc["classes"] = list(reversed(doc["classes"]))
    (c / "images.json").write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match="labels or classes are not those of its paths"):
        open_source(None, str(c), None, "labels", None, 0)
    rep = verify(c)
    assert rep["problems"] == ["corrupt: images.json (its labels or classes are not those of "
                               "its paths (class = first folder level))"]
    code, text = cli("diagnose", c, "--no-plots", "--out", tmp_path / "d")
    assert code == 2 and "labels or classes" in text


def test_supervised_labels_come_from_the_fingerprinted_paths(made):
    src = open_source(None, str(made / "cache"), None, "labels", None, 0)
    assert src.images.classes == sorted({p.split("/")[0] for p in src.images.paths})
    assert [src.images.classes[y] for y in src.images.labels] == [
        p.split("/")[0] for p in src.images.paths]


# ---------------------------------------------------------------- 9: valid JSON, other shape

SHAPES = {"list": [], "number": 7, "no shards": {"format": RAW, "format_version": 1},
          "shards not a list": {"format": RAW, "format_version": 1, "fingerprint": "x",
                                "settings": {}, "n_images": 12, "views": 2, "shards": 5},
          "a shard not an object": {"format": RAW, "format_version": 1, "fingerprint": "x",
                                    "settings": {}, "n_images": 12, "views": 2,
                                    "shards": ["shard-00000.h5"]}}


@pytest.mark.parametrize("shape", list(SHAPES))
def test_a_manifest_of_another_shape_is_one_line(made, tmp_path, shape):
    c = _copy(made, tmp_path)
    (c / "manifest.json").write_text(json.dumps(SHAPES[shape]))
    for args, want in ((("fit-svd", "--cache", c, "--out", tmp_path / "t", "--dim", "8"), 2),
                       (("info", c), 2), (("verify", c), 1)):
        code, text = cli(*args)
        assert code == want and "expected shape" in text, (args, text)
        assert "internal error" not in text and "Traceback" not in text


@pytest.mark.parametrize("doc", [[], {"format": "kdep-cache/student"},
                                 {"format": "kdep-cache/student", "student": "resnet18",
                                  "settings": [], "fingerprint": "x"},
                                 "INPUT"])
def test_a_sidecar_of_another_shape_is_one_line(made, tmp_path, doc):
    run = _copy(made, tmp_path, "run")
    side = json.loads((run / "student.json").read_text())
    if doc == "INPUT":
        side["input"]["mean"] = "imagenet"
        doc = side
    (run / "student.json").write_text(json.dumps(doc))
    for args, want in ((("transfer", "--student", run, "--data", made / "images", "--out",
                         tmp_path / "x"), 2), (("info", run), 2), (("verify", run), 1)):
        code, text = cli(*args)
        assert code == want and "expected shape" in text, (args, text)
        assert "internal error" not in text and "Traceback" not in text


@pytest.mark.parametrize("doc", [[], {"format": "kdep-cache/transfer", "student": "r18"},
                                 {"format": "kdep-cache/transfer", "student": {},
                                  "summary": [1], "seeds": []}])
def test_a_results_file_of_another_shape_is_one_line(tmp_path, doc):
    res = tmp_path / "res"
    res.mkdir()
    (res / "results.json").write_text(json.dumps(doc))
    for args, want in ((("info", res), 2), (("verify", res), 1), (("compare", res), 2)):
        code, text = cli(*args)
        assert code == want and ("expected shape" in text or "not a transfer result" in text), (
            args, text)
        assert "internal error" not in text and "Traceback" not in text


# ---------------------------------------------------------------- 17: re-checked per epoch

def test_a_target_shard_changed_in_place_during_training_is_refused(made, tmp_path,
                                                                     monkeypatch):
    t = _copy(made, tmp_path, "targets")
    shard = t / "shard-00000.h5"
    with h5py.File(shard, "r") as f:
        off = f["targets"].id.get_offset()
    real, calls = loop.save_checkpoint, []

    def save_then_change(run_dir, state):  # epoch 1 done: the shard changes in place
        real(run_dir, state)
        calls.append(1)
        with open(shard, "r+b") as f:  # same inode: what the memory maps read
            f.seek(off)
            f.write(b"\x00\x7c" * 4)  # float16 +inf
    monkeypatch.setattr(loop, "save_checkpoint", save_then_change)
    with pytest.raises(ArtifactError, match="shard-00000.h5: array 'targets' does not match"):
        train_student(TrainConfig("resnet18", str(tmp_path / "run"), targets=str(t),
                                  cache=str(made / "cache"), **{**TRAIN, "epochs": 3}))
    assert len(calls) == 1  # refused as epoch 2 started


def test_recheck_rehashes_only_a_shard_whose_stat_changed(made, tmp_path, monkeypatch):
    t = _copy(made, tmp_path, "targets")
    s = Store(t, TARGETS)
    s.check_arrays = ("targets", "valid")
    s.check_all(s.check_arrays)
    hashed = []
    real = store_mod.array_sha
    monkeypatch.setattr(store_mod, "array_sha", lambda a: hashed.append(1) or real(a))
    s.recheck()
    assert hashed == []  # nothing changed: one stat per shard
    os.utime(t / "shard-00001.h5", ns=(1, 1))  # touched, same bytes: re-hashed and accepted
    s.recheck()
    assert len(hashed) == 2
    assert s._checked_arrays == {(i, n) for i in range(3) for n in ("targets", "valid")}


@pytest.mark.parametrize("doc", [[], "x"])
def test_config_json_of_another_shape_is_one_line(made, tmp_path, doc):
    out = tmp_path / "t"
    out.mkdir()
    (out / "config.json").write_text(json.dumps(doc))
    code, text = cli("fit-svd", "--cache", made / "cache", "--out", out, "--dim", "8")
    assert code == 2 and "not a settings record" in text, text
    assert "internal error" not in text and "Traceback" not in text


def test_a_shard_sidecar_of_another_shape_is_redone(made, teacher_file, tmp_path):
    c = _copy(made, tmp_path)
    (c / "manifest.json").unlink()  # an unfinished extract whose shard sidecar is damaged
    (c / "shard-00001.json").write_text(json.dumps([1, 2]))
    extract(extract_cfg(made / "images", c, teacher_file))
    assert verify(c)["ok"]
    assert json.loads((c / "manifest.json").read_text())["fingerprint"] == json.loads(
        (made / "cache" / "manifest.json").read_text())["fingerprint"]


def test_transfer_rerun_over_results_of_another_shape_is_one_line(made, tmp_path):
    out = tmp_path / "x"
    out.mkdir()
    (out / "results.json").write_text(json.dumps({"format": "kdep-cache/transfer",
                                                  "student": "r18"}))
    code, text = cli("transfer", "--student", made / "run", "--data", made / "images",
                     "--out", out, "--image-size", "32", "--allow-leakage")
    assert code == 2 and "expected shape" in text, text


def test_a_changed_projection_is_refused_where_it_is_read(made, tmp_path):
    from kdep_cache.fit.projection import load_projection
    t = _copy(made, tmp_path, "targets")
    with h5py.File(t / "projection.h5", "r") as f:
        off = f["weight"].id.get_offset()
    load_projection(t / "projection.h5")
    with open(t / "projection.h5", "r+b") as f:
        f.seek(off + 8)
        f.write(b"\x00\x00\x00\x00\x00\x00\xf0\x3f")  # 1.0 (float64)
    with pytest.raises(ArtifactError, match="does not match its own fingerprint"):
        load_projection(t / "projection.h5")
    code, text = cli("diagnose", made / "cache", "--targets", t, "--no-plots", "--out",
                     tmp_path / "d")
    assert code == 2 and "does not match its own fingerprint" in text, text
