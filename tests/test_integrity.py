"""Issue 23 (2, 6, 14): a student's weights and the sidecar fields transfer acts on are checked
against its fingerprint where they are read (transfer, a train-student rerun, verify); a
sidecar written before version 2 still reads, with a one-line note."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner
from conftest import HERE, extract_cfg

from kdep_cache.audit.verify import verify
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.storage.digest import weights_sha
from kdep_cache.storage.fsio import fingerprint
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.transfer import TransferConfig, transfer
from kdep_cache.transfer.students import resolve_student

TRAIN = dict(epochs=1, batch_size=6, workers=0, device="cpu", precision="fp32", lr=0.01)
XFER = dict(mode="linear", seeds=(0,), workers=0, device="cpu", precision="fp32",
            image_size=32, batch_size=8, test_fraction=0.5, allow_leakage=True)


@pytest.fixture(scope="module")
def made(tmp_path_factory, teacher_file):
    d = tmp_path_factory.mktemp("integrity")
    shutil.copytree(HERE / "data" / "cifar", d / "images")
    extract(extract_cfg(d / "images", d / "cache", teacher_file))
    fit_svd(FitConfig(str(d / "cache"), str(d / "targets"), dim=512, aligner="identity"))
    train_student(TrainConfig("resnet18", str(d / "run"), targets=str(d / "targets"), **TRAIN))
    return d


def _copy_run(made, tmp_path) -> Path:
    run = tmp_path / "run"
    shutil.copytree(made / "run", run)
    return run


def _edit_sidecar(run: Path, edit) -> None:
    side = json.loads((run / "student.json").read_text())
    edit(side)
    (run / "student.json").write_text(json.dumps(side))


def _as_v1(side: dict, run: Path) -> None:
    """What a version-1 writer left: fingerprint of settings + weights only."""
    sd = torch.load(run / "student.pth", weights_only=True)
    side["format_version"] = 1
    side["fingerprint"] = fingerprint({"settings": side["settings"], "weights": weights_sha(sd)})


def test_sidecar_is_version_2_and_verifies(made):
    side = json.loads((made / "run" / "student.json").read_text())
    assert side["format_version"] == 2
    rep = verify(made / "run")
    assert rep["ok"] and not rep["notes"], rep


def test_transfer_refuses_swapped_weights_and_verify_says_corrupt(made, tmp_path):
    run = _copy_run(made, tmp_path)
    sd = torch.load(run / "student.pth", weights_only=True)
    sd["conv1.weight"] = sd["conv1.weight"].flip(0)  # same shapes: loads and builds
    torch.save(sd, run / "student.pth")
    with pytest.raises(ArtifactError, match="do not match its fingerprint"):
        resolve_student(str(run))
    r = CliRunner().invoke(main, ["transfer", "--student", str(run), "--data",
                                  str(made / "images"), "--out", str(tmp_path / "x")])
    assert r.exit_code == 2 and "do not match its fingerprint" in r.output, r.output
    assert "Traceback" not in r.output and not (tmp_path / "x" / "results.json").exists()
    rep = verify(run)
    assert not rep["ok"] and rep["problems"][0].startswith("corrupt: student.pth")


def test_transfer_refuses_an_edited_input_normalisation(made, tmp_path):
    run = _copy_run(made, tmp_path)
    _edit_sidecar(run, lambda s: s["input"].update(mean=[0.0, 0.0, 0.0]))
    with pytest.raises(ArtifactError, match="do not match its fingerprint"):
        resolve_student(str(run))
    assert not verify(run)["ok"]
    _edit_sidecar(run, lambda s: s.pop("input"))  # version 2 without a fingerprinted field
    with pytest.raises(ArtifactError, match="lacks input"):
        resolve_student(str(run))
    assert verify(run)["problems"][0].startswith("corrupt: student.json")


def test_verify_on_a_transfer_result_rehashes_the_students_weights(made, tmp_path):
    run = _copy_run(made, tmp_path)
    transfer(TransferConfig(str(run), str(made / "images"), str(tmp_path / "x"), **XFER))
    assert verify(tmp_path / "x")["ok"]
    sd = torch.load(run / "student.pth", weights_only=True)
    sd["fc.bias"] += 1.0
    torch.save(sd, run / "student.pth")
    rep = verify(tmp_path / "x")
    assert not rep["ok"] and any(p.startswith("corrupt: student") for p in rep["problems"])


def test_version_1_sidecar_reads_with_a_one_line_note(made, tmp_path, caplog):
    run = _copy_run(made, tmp_path)
    _edit_sidecar(run, lambda s: _as_v1(s, run))
    with caplog.at_level(logging.WARNING):
        st = resolve_student(str(run))
    assert st.kind == "run" and any("predates format version 2" in r.message
                                    for r in caplog.records)
    rep = verify(run)
    assert rep["ok"] and any("predates format version 2" in n for n in rep["notes"])
    # version 1 fingerprints the weights: those are still checked
    sd = torch.load(run / "student.pth", weights_only=True)
    sd["fc.bias"] += 1.0
    torch.save(sd, run / "student.pth")
    with pytest.raises(ArtifactError, match="do not match its fingerprint"):
        resolve_student(str(run))


def test_sidecar_of_a_newer_version_is_refused(made, tmp_path):
    run = _copy_run(made, tmp_path)
    _edit_sidecar(run, lambda s: s.update(format_version=9))
    with pytest.raises(ArtifactError, match="format version 9"):
        resolve_student(str(run))


@pytest.mark.parametrize("damage", ["missing", "other weights"])
def test_train_student_rerun_is_not_already_trained_without_its_weights(made, tmp_path, damage):
    run = _copy_run(made, tmp_path)
    cfg = TrainConfig("resnet18", str(run), targets=str(made / "targets"), **TRAIN)
    assert train_student(cfg)["note"] == "already trained"
    if damage == "missing":
        (run / "student.pth").unlink()
    else:
        sd = torch.load(run / "student.pth", weights_only=True)
        sd["fc.bias"] += 1.0
        torch.save(sd, run / "student.pth")
    with pytest.raises(ArtifactError, match="no student.pth|do not match its fingerprint"):
        train_student(cfg)
    r = CliRunner().invoke(main, ["train-student", "--student", "resnet18", "--out", str(run),
                                  "--targets", str(made / "targets"), "--epochs", "1",
                                  "--batch-size", "6", "--workers", "0", "--device", "cpu",
                                  "--precision", "fp32", "--lr", "0.01"])
    assert r.exit_code == 2 and "already trained" not in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1 and "Traceback" not in r.output
