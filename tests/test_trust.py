"""Trust what is read: every consuming stage verifies the bytes it reads (shard checksums bound
to their slots, checkpoint digests, image content identity), and a damaged shard left before
the manifest is redone on rerun instead of failing every rerun."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import extract_cfg

from kdep_cache.cache import RAW, Store
from kdep_cache.cache.schema import ARRAY_ATTR, MANIFEST
from kdep_cache.errors import ArtifactError, InputError, LineageError, LockedError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.train import loop
from kdep_cache.train.student import TrainConfig, train_student

CIFAR = Path(__file__).parent / "data" / "cifar"


@pytest.fixture(scope="module")
def made(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("trust")
    shutil.copytree(CIFAR, d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file, pack="none"))  # the folder path
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), dim=512, aligner="identity"))
    return d


def _train(made, out, **kw):
    base = dict(student="resnet18", out=str(out), targets=str(made / "targets"), epochs=1,
                batch_size=6, workers=0, device="cpu", precision="fp32", lr=0.01)
    base.update(kw)
    return train_student(TrainConfig(**base))


def _fit(cache, out, **kw):
    return fit_svd(FitConfig(str(cache), str(out), **{"dim": 8, **kw}))


def _flip(path: Path, pos: int) -> None:
    data = bytearray(path.read_bytes())
    data[pos] ^= 0x5A
    path.write_bytes(bytes(data))


def _array_regions(path: Path) -> dict[str, tuple[int, int]]:
    with h5py.File(path, "r") as f:
        return {k: (f[k].id.get_offset(), f[k].id.get_storage_size()) for k in f}


def test_every_flipped_byte_in_any_array_region_is_refused(made, tmp_path):
    """Randomized: one byte flipped in each array of each shard (plus anywhere in the file):
    fit-svd refuses every one, naming the shard, and writes nothing."""
    rng = np.random.default_rng(0)
    shards = sorted((made / "cache").glob("shard-*.h5"))
    regions = _array_regions(shards[0])
    assert {"features", "params", "valid", "file_size", "file_sha256"} <= set(regions)
    cases = []
    for shard in shards:
        for name, (off, size) in _array_regions(shard).items():
            cases.append((shard.name, name, off + int(rng.integers(size))))
        cases.append((shard.name, "anywhere", int(rng.integers(shard.stat().st_size))))
    for i, (shard, what, pos) in enumerate(cases):
        c = tmp_path / f"c{i}"
        shutil.copytree(made / "cache", c)
        _flip(c / shard, pos)
        with pytest.raises(ArtifactError, match=f"{shard}.*(checksum|not a readable)") as e:
            _fit(c, tmp_path / f"t{i}")
        assert "kdep-cache verify" in str(e.value) or "readable" in str(e.value), (what, e.value)
        assert not (tmp_path / f"t{i}").exists(), what
        shutil.rmtree(c)


def test_swapped_shards_are_refused(made, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(made / "cache", c)
    a, b = c / "shard-00000.h5", c / "shard-00001.h5"
    tmp = c / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(ArtifactError, match="shard-00000.h5 does not match its checksum"):
        _fit(c, tmp_path / "t")


def test_train_student_refuses_a_corrupt_target_shard_before_training(made, tmp_path):
    t = tmp_path / "t"
    shutil.copytree(made / "targets", t)
    off, size = _array_regions(t / "shard-00001.h5")["targets"]
    _flip(t / "shard-00001.h5", off + size // 2)
    with pytest.raises(ArtifactError, match="shard-00001.h5: array 'targets' does not match"):
        _train(made, tmp_path / "run", targets=str(t))
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("array, refused", [("params", True), ("file_sha256", True),
                                            ("features", False)])
def test_train_student_checks_the_raw_arrays_it_reads(made, tmp_path, array, refused):
    """train-student verifies only what it reads of the raw cache (replay parameters, image
    identities), not the teacher features a kdep student never touches; fit-svd, which reads
    the features, refuses that flip."""
    c, t = tmp_path / "c", tmp_path / "t"
    shutil.copytree(made / "cache", c)
    shutil.copytree(made / "targets", t)
    off, size = _array_regions(c / "shard-00000.h5")[array]
    _flip(c / "shard-00000.h5", off + size // 3)
    if refused:
        with pytest.raises(ArtifactError, match=f"array '{array}' does not match"):
            _train(made, tmp_path / "run", targets=str(t), cache=str(c))
    else:
        assert _train(made, tmp_path / "run", targets=str(t), cache=str(c))["epochs"] == 1
        with pytest.raises(ArtifactError, match="does not match its checksum"):
            _fit(c, tmp_path / "t2")


def test_resume_refuses_a_checkpoint_with_a_flipped_bit(made, tmp_path, monkeypatch):
    real = loop.save_checkpoint

    def crash_after_first(run_dir, state):
        real(run_dir, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", crash_after_first)
    with pytest.raises(KeyboardInterrupt):
        _train(made, tmp_path / "run", epochs=2)
    monkeypatch.setattr(loop, "save_checkpoint", real)
    ck = tmp_path / "run" / "checkpoint.pt"
    clean = ck.read_bytes()
    state = torch.load(ck, weights_only=True)
    # the first byte of fc.weight's data inside the zip: a bit that torch.load does not check
    needle = state["model"]["net.fc.weight"].numpy().tobytes()[:64]
    pos = clean.find(needle)
    assert pos > 0
    data = bytearray(clean)
    data[pos + 3] ^= 0x01
    ck.write_bytes(bytes(data))
    assert not torch.equal(torch.load(ck, weights_only=True)["model"]["net.fc.weight"],
                           state["model"]["net.fc.weight"])  # it loads, with other numbers
    with pytest.raises(ArtifactError, match="does not match its own digest"):
        _train(made, tmp_path / "run", epochs=2, resume=True)
    ck.write_bytes(clean)
    assert _train(made, tmp_path / "run", epochs=2, resume=True)["epochs"] == 2
    assert not ck.exists()  # dropped once the student is saved (no --keep-checkpoint)


def _same_names_other_pixels(src: Path, dst: Path, same_size: bool) -> list[str]:
    """A copy of ``src`` whose files keep their names but not their content."""
    shutil.copytree(src, dst)
    files = sorted(p for p in dst.rglob("*.jpg"))
    if same_size:  # one byte inside the entropy-coded data of the first file: same size
        _flip(files[0], files[0].stat().st_size - 40)
        return [str(files[0].relative_to(dst))]
    blobs = [p.read_bytes() for p in files]
    for p, b in zip(files, blobs[1:] + blobs[:1]):  # rotate the contents by one
        p.write_bytes(b)
    return [str(p.relative_to(dst)) for p in files]


@pytest.mark.parametrize("same_size", [False, True])
def test_extract_resume_refuses_same_names_with_other_pixels(made, teacher_file, tmp_path,
                                                             same_size):
    c = tmp_path / "c"
    shutil.copytree(made / "cache", c)
    (c / MANIFEST).unlink()
    for f in ("shard-00002.h5", "shard-00002.json"):
        (c / f).unlink()  # interrupted before the last shard
    other = tmp_path / "other"
    changed = _same_names_other_pixels(made / "images", other, same_size)
    cfg = extract_cfg(other, c, teacher_file, pack="none")
    with pytest.raises(LineageError, match="differ from the ones this cache was started with"):
        extract(cfg)
    assert not (c / "shard-00002.h5").exists()
    if same_size:  # only a sha256 can tell
        assert any(x in changed[0] for x in ("cat", "ship"))


@pytest.mark.parametrize("same_size", [False, True])
def test_train_student_data_relocation_refuses_other_pixels(made, tmp_path, same_size):
    other = tmp_path / "other"
    _same_names_other_pixels(made / "images", other, same_size)
    with pytest.raises(LineageError, match="differ from the ones the cache was extracted from"):
        _train(made, tmp_path / "run", data=str(other))
    moved = tmp_path / "moved"
    shutil.copytree(made / "images", moved)
    assert _train(made, tmp_path / "ok", data=str(moved))["epochs"] == 1  # same bytes: fine


def test_images_json_records_size_and_sha256(made):
    import hashlib
    d = json.loads((made / "cache" / "images.json").read_text())
    for rel, size, sha in zip(d["paths"], d["sizes"], d["sha256"]):
        b = (made / "images" / rel).read_bytes()
        assert size == len(b) and sha == hashlib.sha256(b).hexdigest()


@pytest.mark.parametrize("bad", [dict(pts_t=math.nan), dict(pts_n=math.nan),
                                 dict(pts_t=-0.1), dict(pts_n=math.inf)])
def test_fit_svd_refuses_non_finite_or_negative_pts_before_writing(made, tmp_path, bad):
    with pytest.raises(InputError, match="--pts-"):
        _fit(made / "cache", tmp_path / "t", **bad)
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("bad", [dict(seed=-1), dict(crop=(0.9, 0.1)), dict(crop=(math.nan, 1)),
                                 dict(crop=(0, 0)), dict(crop=(1.5, 2)), dict(image_size=0)])
def test_extract_refuses_bad_values_and_leaves_nothing(teacher_file, images, tmp_path, bad):
    from kdep_cache.views.augment import AugmentSpec
    kw = dict(bad)
    if "crop" in kw:
        kw["augment"] = AugmentSpec(scale=kw.pop("crop"))
    with pytest.raises(InputError):
        extract(extract_cfg(images, tmp_path / "c", teacher_file, **kw))
    assert not (tmp_path / "c").exists()
    extract(extract_cfg(images, tmp_path / "c", teacher_file, views=1))  # the corrected run


@pytest.mark.parametrize("damage", ["truncate", "attr-not-json", "no-sidecar"])
def test_damaged_shard_from_before_the_manifest_is_redone(made, teacher_file, tmp_path, damage):
    c = tmp_path / "c"
    shutil.copytree(made / "cache", c)
    (c / MANIFEST).unlink()
    last = c / "shard-00002.h5"
    if damage == "truncate":
        last.write_bytes(last.read_bytes()[: last.stat().st_size // 2])
    elif damage == "attr-not-json":
        with h5py.File(last, "a") as f:
            f.attrs[ARRAY_ATTR] = np.int64(5)
    else:
        last.with_suffix(".json").unlink()  # killed between the shard and its sidecar
    assert extract(extract_cfg(made / "images", c, teacher_file, pack="none"))["complete"]
    assert Store(c, RAW).fingerprint == Store(made / "cache", RAW).fingerprint
    with h5py.File(last, "r") as a, h5py.File(made / "cache" / "shard-00002.h5", "r") as b:
        assert all(np.array_equal(a[k][()], b[k][()]) for k in b)


def test_other_world_size_cannot_write_the_same_folder(made, teacher_file, tmp_path):
    out = tmp_path / "c"
    out.mkdir()
    me = json.dumps({"pid": os.getpid(), "host": __import__("socket").gethostname()})
    (out / ".lock").write_text(me)  # a live one-process extract
    with pytest.raises(LockedError, match="another --world-size"):
        extract(extract_cfg(made / "images", out, teacher_file, rank=0, world_size=2))
    (out / ".lock").unlink()
    (out / ".lock-rank1-of-3").write_text(me)  # a live rank of a 3-process world
    with pytest.raises(LockedError, match="another --world-size"):
        extract(extract_cfg(made / "images", out, teacher_file, rank=0, world_size=2))
    (out / ".lock-rank1-of-3").unlink()
    (out / ".lock-rank1-of-12").write_text(me)  # "-of-12" is not "-of-2"
    with pytest.raises(LockedError, match="another --world-size"):
        extract(extract_cfg(made / "images", out, teacher_file, rank=0, world_size=2))
    (out / ".lock-rank1-of-12").unlink()
    (out / ".lock-rank1-of-2").write_text(me)  # a live rank of the same world: allowed
    r = extract(extract_cfg(made / "images", out, teacher_file, rank=0, world_size=2))
    assert r["images_processed"] > 0


def test_fit_svd_rerun_says_already_complete_and_recomputes_nothing(made, tmp_path):
    r = _fit(made / "cache", made / "targets", dim=512, aligner="identity")
    assert r["note"] == "already complete" and r["seconds"] == 0.0
    with pytest.raises(InputError, match="other settings"):
        _fit(made / "cache", made / "targets", dim=512, aligner="identity", transform="none")


def test_fit_svd_on_an_unfinished_extract_names_extract(made, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(made / "cache", c)
    (c / MANIFEST).unlink()
    with pytest.raises(ArtifactError, match="finish that `kdep-cache extract`"):
        _fit(c, tmp_path / "t")


def test_verify_checks_student_safetensors_against_the_sidecar(made, tmp_path):
    from kdep_cache.audit.verify import verify
    run = tmp_path / "run"
    _train(made, run)
    files = {f["file"]: f["status"] for f in verify(run)["files"]}
    assert files["student.safetensors"] == "ok" and files["student.pth"] == "ok"
    data = bytearray((run / "student.safetensors").read_bytes())
    data[len(data) // 2] ^= 0x01  # inside a tensor's bytes (the header is at the start)
    (run / "student.safetensors").write_bytes(bytes(data))
    rep = verify(run)
    assert not rep["ok"] and rep["problems"][0].startswith("corrupt: student.safetensors")
