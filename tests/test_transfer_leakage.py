"""The pre-training leakage check compares image content, not paths (#22.14)."""

from __future__ import annotations

import hashlib
import json
import shutil

import pytest
from test_transfer import FAST, assert_one_line_error, cli, fake_run, make_tree

from kdep_cache.errors import InputError
from kdep_cache.transfer.leakage import leaked
from kdep_cache.transfer.run import TransferConfig, transfer


@pytest.fixture
def ds(tmp_path):
    make_tree(tmp_path / "ds" / "train", n=6)
    make_tree(tmp_path / "ds" / "test", n=2, seed=1)
    return tmp_path / "ds"


def _pretraining_copy(tmp_path, ds, record: bool):
    """A pre-training folder holding copies (other folder, other names) of 2 of the downstream
    test images plus 3 train images, listed like a cache's images.json."""
    pre = tmp_path / "elsewhere" / "pool"
    pre.mkdir(parents=True)
    picked = sorted((ds / "test").rglob("*.png"))[:2] + sorted((ds / "train").rglob("*.png"))[:3]
    for i, p in enumerate(picked):
        shutil.copy(p, pre / f"img_{i:03d}.png")
    paths = sorted(p.name for p in pre.iterdir())
    doc = {"root": str(pre), "paths": paths}
    if record:
        data = [(pre / p).read_bytes() for p in paths]
        doc.update(sizes=[len(b) for b in data],
                   sha256=[hashlib.sha256(b).hexdigest() for b in data])
    listing = tmp_path / "cache" / "images.json"
    listing.parent.mkdir()
    listing.write_text(json.dumps(doc))
    lineage = {"cache": "c" * 64, "images": "i", "images_root": str(pre),
               "images_file": str(listing), "n_images": len(paths)}
    return lineage, [str(p) for p in picked[:2]], pre


@pytest.mark.parametrize("record", [True, False], ids=["recorded-sha256", "hashed-on-disk"])
def test_copy_of_a_test_image_under_another_folder_is_leakage(tmp_path, ds, record):
    lineage, expected, _ = _pretraining_copy(tmp_path, ds, record)
    tests = sorted(str(p) for p in (ds / "test").rglob("*.png"))
    checked, overlap = leaked(lineage, tests)
    assert checked and overlap == sorted(expected)


def test_recorded_digests_catch_leakage_after_the_pretraining_files_moved(tmp_path, ds):
    lineage, expected, pre = _pretraining_copy(tmp_path, ds, record=True)
    shutil.rmtree(pre)  # only images.json's digests remain
    tests = sorted(str(p) for p in (ds / "test").rglob("*.png"))
    assert leaked(lineage, tests) == (True, sorted(expected))


def test_same_size_other_content_is_not_leakage(tmp_path):
    pre, down = tmp_path / "pre", tmp_path / "down"
    pre.mkdir()
    down.mkdir()
    (pre / "a.png").write_bytes(b"x" * 100)
    (down / "a.png").write_bytes(b"y" * 100)
    lineage = {"images_root": str(pre), "images_file": None}
    listing = tmp_path / "images.json"
    listing.write_text(json.dumps({"root": str(pre), "paths": ["a.png"]}))
    for lin in (lineage, {"images_root": str(pre), "images_file": str(listing)}):
        assert leaked(lin, [str(down / "a.png")]) == (True, [])


def test_transfer_refuses_a_copied_test_image_and_records_the_method(tmp_path, ds):
    lineage, _, _ = _pretraining_copy(tmp_path, ds, record=True)
    run = fake_run(tmp_path, lineage)
    out = tmp_path / "leak"
    with pytest.raises(InputError, match="LEAKAGE: 2 of the 6"):
        transfer(TransferConfig(str(run), str(ds), str(out), image_size=32, seeds=(0,),
                                workers=0, device="cpu", precision="fp32"))
    assert_one_line_error(cli("transfer", "--student", run, "--data", ds, "--out", out, *FAST),
                          "LEAKAGE")
    res = cli("transfer", "--student", run, "--data", ds, "--out", out, "--seeds", "0",
              "--allow-leakage", *FAST)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())["leakage"]
    assert r["overlap"] == 2 and r["by"] == "sha256" and r["allowed"]
