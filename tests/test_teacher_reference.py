"""``transfer --student teacher:CACHE`` (the cache's teacher as the reference row) and
``compare``'s "% of teacher" (issue 28.1).

The teacher's probe features are checked against an independent computation (torchvision's
ResNet-18 with the saved weights, ``fc`` removed, on a hand-built test transform); the
percentages against numbers computed by hand from two results.json files."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
import torchvision.transforms as T
from click.testing import CliRunner
from conftest import extract_cfg
from PIL import Image
from test_transfer import FAST, assert_one_line_error, make_tree

import kdep_cache.cli.transfer  # noqa: F401
from kdep_cache.cli import main
from kdep_cache.errors import InputError
from kdep_cache.extract.run import extract
from kdep_cache.transfer import compare as cmp
from kdep_cache.transfer import reference
from kdep_cache.transfer.classification import seeds
from kdep_cache.transfer.run import TransferConfig, aggregate, transfer

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
# the teacher's own settings: no --image-size (the cache's size) and no --precision (auto)
TEACHER_FAST = ["--workers", "0", "--device", "cpu", "--batch-size", "8"]


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


@pytest.fixture(scope="module")
def cache(tmp_path_factory, teacher_file) -> Path:
    """A raw cache of 12 CIFAR photos at 32 px, extracted by a saved random-init ResNet-18."""
    tmp = tmp_path_factory.mktemp("tref")
    shutil.copytree(Path(__file__).parent / "data" / "cifar", tmp / "du")
    extract(extract_cfg(tmp / "du", tmp / "cache", teacher_file))
    return tmp / "cache"


@pytest.fixture
def ds(tmp_path) -> Path:
    make_tree(tmp_path / "ds" / "train", n=6)
    make_tree(tmp_path / "ds" / "test", n=2, seed=1)
    return tmp_path / "ds"


def _post_by_hand(weights: str, files: list[Path], size: int) -> np.ndarray:
    """Independent: torchvision ResNet-18 minus its fc = avgpool(relu(layer4)) = ``post``."""
    net = torchvision.models.resnet18()
    net.load_state_dict(torch.load(weights))
    net.fc = torch.nn.Identity()
    tf = T.Compose([T.Resize(round(size * 256 / 224)), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize(*IMAGENET)])
    x = torch.stack([tf(Image.open(f).convert("RGB")) for f in files])
    with torch.no_grad():
        return net.eval()(x).numpy()


def test_the_teacher_row_probes_the_caches_teacher(cache, ds, tmp_path, teacher_file,
                                                   monkeypatch):
    seen = []
    real = seeds.linear_probe
    monkeypatch.setattr(seeds, "linear_probe",
                        lambda tr, te, *a, **k: seen.append(tr) or real(tr, te, *a, **k))
    out = tmp_path / "t"
    res = cli("transfer", "--student", f"teacher:{cache}", "--data", ds, "--out", out,
              "--seeds", "0,1", *TEACHER_FAST)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    cfg = json.loads((cache / "config.json").read_text())
    man = json.loads((cache / "manifest.json").read_text())
    st = r["student"]
    assert st["kind"] == "teacher" and st["label"] == "resnet18 (teacher)"
    assert st["weights_sha256"] == cfg["teacher"]["weights_sha256"] != "random"
    assert st["fingerprint"] == man["fingerprint"] and st["cache"] == str(cache.resolve())
    assert st["teacher"]["name"] == "resnet18"
    p = r["protocol"]
    assert p["image_size"] == cfg["image_size"] == 32 and "cache's view size" in \
        p["image_size_source"]
    assert (p["mean"], p["std"]) == IMAGENET and p["precision"] == "fp32"  # auto on CPU
    assert r["leakage"]["checked"] is True and r["leakage"]["overlap"] == 0
    # the features the probe was fitted on are the teacher's post features (one extraction:
    # the teacher is the same network for every seed)
    assert len(seen) == 2 and seen[0][0] is seen[1][0]
    train = sorted((ds / "train").rglob("*.png"))
    want = _post_by_hand(teacher_file, train[:2] + train[-1:], 32)
    got = seen[0][0][[0, 1, len(train) - 1]]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_the_teacher_is_never_fine_tuned(cache, ds, tmp_path):
    out = tmp_path / "ft"
    assert_one_line_error(cli("transfer", "--student", f"teacher:{cache}", "--data", ds,
                              "--out", out, "--mode", "finetune", *FAST),
                          "the teacher is never fine-tuned here: it may be large; use --mode "
                          "linear")
    assert_one_line_error(cli("transfer", "--student", f"teacher:{cache}", "--data", ds,
                              "--out", out, "--task", "segmentation", *FAST),
                          "never fine-tuned")
    assert not out.exists()  # refused before any work
    with pytest.raises(InputError, match="never fine-tuned"):  # the library refuses it too
        transfer(TransferConfig(f"teacher:{cache}", str(ds), str(out), mode="finetune"))
    assert_one_line_error(cli("transfer", "--student", f"teacher:{tmp_path / 'none'}",
                              "--data", ds, "--out", out, *FAST), "does not exist")
    assert_one_line_error(cli("transfer", "--student", f"teacher:{ds}", "--data", ds,
                              "--out", out, *FAST), "not a raw kdep-cache cache")
    assert reference.PREFIX == __import__("kdep_cache.models.from_cache",
                                          fromlist=["PREFIX"]).PREFIX


def test_a_random_weights_cache_is_refused(tmp_path, images, ds):
    extract(extract_cfg(images, tmp_path / "rnd", "random"))
    assert_one_line_error(cli("transfer", "--student", f"teacher:{tmp_path / 'rnd'}",
                              "--data", ds, "--out", tmp_path / "o", *TEACHER_FAST),
                          "random weights, which cannot be rebuilt")


def test_the_teacher_row_is_checked_for_leakage_against_the_cache(cache, ds, tmp_path):
    du = json.loads((cache / "images.json").read_text())
    shutil.copy(Path(du["root"]) / du["paths"][0], ds / "test" / "a" / "copy.jpg")
    assert_one_line_error(cli("transfer", "--student", f"teacher:{cache}", "--data", ds,
                              "--out", tmp_path / "o", *TEACHER_FAST), "LEAKAGE: 1 of the 7")


# --- compare: % of teacher -------------------------------------------------------------------

def _result(d: Path, label: str, vals: list[float], mode: str = "linear", kind: str = "run",
            precision: str = "bf16", dataset: str = "cifar") -> Path:
    d.mkdir(parents=True)
    key = "test_top1" if mode == "linear" else "final_top1"
    seeds_ = [{"seed": i, key: v} for i, v in enumerate(vals)]
    (d / "results.json").write_text(json.dumps({
        "format": "kdep-cache/transfer", "student": {"label": label, "kind": kind},
        "dataset": {"path": f"/data/{dataset}", "fingerprint": dataset * 8},
        "protocol": {"mode": mode, "image_size": 64, "precision": precision},
        "seeds": seeds_, "summary": {key: aggregate(vals)}}))
    return d


def test_compare_gives_each_linear_row_its_percent_of_the_teacher(tmp_path):
    dirs = [_result(tmp_path / "t", "lite0 (teacher)", [60.0, 62.0], kind="teacher",
                    precision="fp32"),
            _result(tmp_path / "t2", "lite0 (teacher)", [50.0], kind="teacher",
                    precision="fp32", dataset="flowers"),
            _result(tmp_path / "k", "kdep", [45.0, 47.0]),
            _result(tmp_path / "k2", "kdep", [40.0], dataset="flowers"),
            _result(tmp_path / "r", "random", [30.5]),
            _result(tmp_path / "f", "kdep", [70.0], mode="finetune"),
            _result(tmp_path / "rf", "random", [20.0], mode="finetune")]
    t = cmp.build_table([str(d) for d in dirs])
    assert t.teacher == "lite0 (teacher) [linear]"
    # by hand: 46 / 61, 40 / 50, 30.5 / 61; the mean column: (46 + 40) / 2 over (61 + 50) / 2
    assert t.percent["kdep [linear]", "cifar"] == pytest.approx(100 * 46 / 61)
    assert t.percent["kdep [linear]", "flowers"] == pytest.approx(80.0)
    assert t.percent["random [linear]", "cifar"] == pytest.approx(50.0)
    assert t.percent["kdep [linear]", "mean"] == pytest.approx(100 * 43 / 55.5)
    assert ("kdep [finetune]", "cifar") not in t.percent  # a fine-tune: not like with like
    assert not any(row == t.teacher for row, _ in t.percent)
    text = cmp.format_text(t)
    assert "46.00 ± 1.41 (75%)" in text and "30.50 (50%)" in text
    assert "percentage of lite0 (teacher) [linear]'s" in text
    # the teacher measured in fp32, the students in bf16: the reference, not a warning; the
    # teacher present in one mode only is no "modes differ" warning either
    assert t.notes == [], t.notes
    assert "teacher (reference): linear, 64 px, fp32" in t.settings[0]
    rows = {r["student"]: r for r in csv.DictReader(io.StringIO(cmp.to_csv(t)))}
    assert float(rows["kdep [linear]"]["cifar % of teacher"]) == pytest.approx(100 * 46 / 61,
                                                                               abs=1e-4)
    assert rows["kdep [finetune]"]["cifar % of teacher"] == ""
    assert "(75%)" in cmp.to_markdown(t)
    res = cli("compare", *dirs, "--json", tmp_path / "t.json", "--csv", tmp_path / "t.csv")
    assert res.exit_code == 0, res.output
    doc = json.loads((tmp_path / "t.json").read_text())
    got = {(c["student"], c["column"]): c.get("percent_of_teacher") for c in doc["cells"]}
    assert doc["teacher"] == t.teacher and got["kdep [linear]", "flowers"] == pytest.approx(80)
    assert got["kdep [finetune]", "cifar"] is None and got[t.teacher, "cifar"] is None
    assert (tmp_path / "t.csv").read_text() == cmp.to_csv(t)


def test_compare_without_a_clear_teacher(tmp_path):
    a = _result(tmp_path / "k", "kdep", [45.0])
    b = _result(tmp_path / "r", "random", [30.0], precision="fp32")
    t = cmp.build_table([str(a), str(b)])  # no teacher: no percentages, the CSV as before
    assert t.percent == {} and "% of teacher" not in cmp.to_csv(t)
    assert any("differ in precision" in n for n in t.notes)  # students still held to it
    t1 = _result(tmp_path / "t1", "lite0 (teacher)", [60.0], kind="teacher")
    t2 = _result(tmp_path / "t2", "r50 (teacher)", [70.0], kind="teacher")
    t = cmp.build_table([str(a), str(t1), str(t2)])
    assert t.percent == {} and any("several teacher rows" in n for n in t.notes)
