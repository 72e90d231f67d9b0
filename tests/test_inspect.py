"""``info`` and ``verify`` on every artifact kind: cache, targets, projection, student,
interrupted student, transfer result of a run and of a random init. Every lineage link shows
its path and whether it was checked; verify checks what each kind can be checked by."""

from __future__ import annotations

import json
import shutil
from types import SimpleNamespace

import pytest
from click.testing import CliRunner
from conftest import HERE, extract_cfg

import kdep_cache.train.loop as loop
from kdep_cache.audit.info import info
from kdep_cache.audit.verify import verify
from kdep_cache.cli import main
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.transfer import TransferConfig, transfer

TRAIN = dict(batch_size=12, workers=0, device="cpu", precision="fp32")
XFER = dict(mode="linear", seeds=(0,), workers=0, device="cpu", precision="fp32",
            image_size=32, batch_size=8, test_fraction=0.5, allow_leakage=True)


@pytest.fixture(scope="module")
def arts(tmp_path_factory, teacher_file):
    """cache -> targets -> student (+ an interrupted one) -> transfers (run, random init)."""
    d = tmp_path_factory.mktemp("arts")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), student="resnet18",
                      aligner="identity"))
    train_student(TrainConfig("resnet18", str(d / "run"), targets=str(d / "targets"), epochs=1,
                              **TRAIN))
    real = loop.save_checkpoint

    def save_then_stop(run_dir, state):  # Ctrl-C right after epoch 1 of 3 was checkpointed
        real(run_dir, state)
        raise KeyboardInterrupt

    loop.save_checkpoint = save_then_stop
    try:
        with pytest.raises(KeyboardInterrupt):
            train_student(TrainConfig("resnet18", str(d / "stopped"), targets=str(d / "targets"),
                                      epochs=3, **TRAIN))
    finally:
        loop.save_checkpoint = real
    transfer(TransferConfig(str(d / "run"), str(d / "images"), str(d / "xfer"), **XFER))
    transfer(TransferConfig("random:resnet18", str(d / "images"), str(d / "rand"), **XFER))
    return SimpleNamespace(**{k: d / k for k in ("images", "cache", "targets", "run", "stopped",
                                                 "xfer", "rand")})


def cli(*args) -> tuple[int, str]:
    r = CliRunner().invoke(main, [str(a) for a in args])
    return r.exit_code, r.output


def links(d: dict) -> dict:
    return {n["stage"]: n for n in d["lineage"]}


def test_every_link_shows_its_path_and_check(arts):
    for p in (arts.cache, arts.targets, arts.targets / "projection.h5", arts.run, arts.xfer):
        d = info(p)
        for n in d["lineage"]:
            assert n["status"] in ("ok", "this"), (p, n)
            assert n["path"], (p, n)
        code, text = cli("info", p)
        assert code == 0 and "(path not recorded)" not in text and "?" not in text.split(
            "lineage")[1], text


def test_info_student_shows_projection_and_targets_paths(arts):
    chain = links(info(arts.run))
    assert chain["targets"]["path"] == str(arts.targets.resolve())
    assert chain["projection"]["path"] == str((arts.targets / "projection.h5").resolve())
    assert chain["projection"]["status"] == chain["targets"]["status"] == "ok"
    code, text = cli("info", arts.run)
    assert f"{arts.targets.resolve()}  [ok]" in text
    # a moved targets folder: the link says so instead of claiming ok
    moved = arts.targets.parent / "targets-moved"
    arts.targets.rename(moved)
    try:
        t = links(info(arts.run))["targets"]
        assert t["status"] == "not checked" and "nothing readable" in t["why"]
        assert "not checked: nothing readable at the recorded path" in cli("info", arts.run)[1]
    finally:
        moved.rename(arts.targets)


def test_info_interrupted_run_shows_the_checkpoint_epoch(arts):
    d = info(arts.stopped)
    assert d["complete"] is False and d["checkpoint"] is True
    assert d["epochs"].startswith("1 of 3 (interrupted") and d["student"] == "resnet18"
    assert d["objective"] == "kdep"
    chain = links(d)  # an unfinished run records fingerprints only (paths come with the sidecar)
    assert [n["stage"] for n in d["lineage"]] == ["images", "cache", "projection", "targets",
                                                  "student"]
    assert all(n["status"] == "not checked" and n["why"] == "path not recorded"
               for n in d["lineage"][:-1])
    assert chain["cache"]["fingerprint"] == info(arts.cache)["fingerprint"]
    code, text = cli("info", arts.stopped)
    assert "epochs: 1 of 3 (interrupted: rerun train-student with --resume)" in text
    # the same number the refusal of a rerun names
    with pytest.raises(Exception, match=r"interrupted run \(epoch 1\)"):
        train_student(TrainConfig("resnet18", str(arts.stopped), targets=str(arts.targets),
                                  epochs=3, **TRAIN))
    rep = verify(arts.stopped)
    assert {f["file"]: f["status"] for f in rep["files"]}["checkpoint.pt"] == "ok"
    assert rep["problems"][0].startswith("incomplete: student.json")


def test_info_transfer_prints_rounded_headline_metrics(arts):
    d = info(arts.xfer)
    raw = json.loads((arts.xfer / "results.json").read_text())["summary"]
    k = next(iter(raw))
    m = raw[k]
    assert d["summary"][k] == f"{m['mean']:.2f} (n=1)"
    code, text = cli("info", arts.xfer)
    line = next(ln for ln in text.splitlines() if ln.strip().startswith(f"{k}:"))
    assert line.split(": ", 1)[1] == f"{m['mean']:.2f} (n=1)" and "{" not in line


def test_random_init_transfer_says_random_init(arts):
    s = links(info(arts.rand))["student"]
    assert s["status"] == "not checked" and s["why"] == "random init (no weights)"
    assert s["path"] == "random:resnet18"
    code, text = cli("info", arts.rand)
    assert "random:resnet18  [not checked: random init (no weights)]" in text
    assert "path not recorded" not in text


def test_verify_transfer_results_checks_what_can_be_checked(arts):
    code, text = cli("verify", arts.xfer)
    assert code == 0 and "0 of" not in text
    assert text.strip().splitlines()[-1].endswith("3 verified, 0 not checkable, 0 problems")
    rep = {f["file"]: f for f in verify(arts.xfer)["files"]}
    assert rep["student"]["status"] == "ok" and rep["summary"]["status"] == "ok"
    code, text = cli("verify", arts.rand)
    assert code == 0 and "not checked: student (random:resnet18: random init" in text
    # a tampered mean is caught; a student retrained in place is a mismatch
    bad = arts.xfer.parent / "xfer-bad"
    shutil.copytree(arts.xfer, bad)
    r = json.loads((bad / "results.json").read_text())
    k = next(iter(r["summary"]))
    r["summary"][k]["mean"] += 1.0
    r["student"]["fingerprint"] = "0" * 64
    (bad / "results.json").write_text(json.dumps(r))
    rep = verify(bad)
    assert not rep["ok"] and any(p.startswith("corrupt: summary") for p in rep["problems"])
    assert any(p.startswith("mismatch: student") for p in rep["problems"])


def test_verify_reports_stray_shard_files_and_missing_image_list(arts, tmp_path):
    c = tmp_path / "c"
    shutil.copytree(arts.cache, c)
    assert verify(c)["ok"]
    shutil.copy(c / "shard-00000.json", c / "shard-00099.json")
    shutil.copy(c / "shard-00000.h5", c / "shard-00099.h5")
    (c / "notes.txt").write_text("mine")
    (c / "images.json").unlink()
    rep = verify(c)
    st = {f["file"]: f["status"] for f in rep["files"]}
    assert st["shard-00099.json"] == "extra" and st["shard-00099.h5"] == "extra"
    assert st["images.json"] == "missing" and not rep["ok"]
    assert st["notes.txt"] == "extra"
    code, text = cli("verify", c)
    assert code == 1 and "missing: images.json" in text and "extra: shard-00099.json" in text
    assert "extra: notes.txt (not part of" in text


def test_verify_lists_extra_files_without_failing(arts, tmp_path):
    """Issue 24.10: extra files are listed; the exit status is about what the artifact
    records (no stage reads an extra file), as the README says."""
    c = tmp_path / "c"
    shutil.copytree(arts.cache, c)
    shutil.copy(c / "shard-00000.h5", c / "shard-00099.h5")
    (c / "notes.txt").write_text("mine")
    rep = verify(c)
    assert rep["ok"] and not rep["problems"]
    assert {f["file"] for f in rep["files"] if f["status"] == "extra"} == {"shard-00099.h5",
                                                                            "notes.txt"}
    code, text = cli("verify", c)
    assert code == 0 and "extra: shard-00099.h5" in text and "extra: notes.txt" in text
    assert text.strip().splitlines()[-1].startswith("ok: raw-cache")


def test_info_cache_shows_background_and_scan(arts, tmp_path):
    d = info(arts.cache)
    assert d["augment"]["background"] == [128, 128, 128]  # the default, recorded
    code, text = cli("info", arts.cache)
    assert "background=[128, 128, 128]" in text
    for stage in ("images", "cache"):
        assert links(d)[stage]["status"] in ("ok", "this")
