"""Stage 3 (transfer / compare): fast CPU tests on tiny synthetic image folders."""

from __future__ import annotations

import csv
import io
import json
import math
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from click.testing import CliRunner
from PIL import Image
from sidecars import signed
from torch import nn

import kdep_cache.cli.transfer  # noqa: F401  (registers transfer/compare until cli.py imports it)
from kdep_cache.cli import main
from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.models import FeatureNet
from kdep_cache.transfer import compare as cmp
from kdep_cache.transfer.classification import finetune as ft
from kdep_cache.transfer.classification import linear
from kdep_cache.transfer.classification.data import open_downstream
from kdep_cache.transfer.run import TransferConfig, aggregate, transfer
from kdep_cache.transfer.students import resolve_student

COLOURS = {"a": (220, 30, 30), "b": (30, 220, 30), "c": (30, 30, 220), "d": (200, 200, 30)}
FAST = ["--image-size", "32", "--workers", "0", "--device", "cpu", "--precision", "fp32",
        "--batch-size", "8"]


def make_tree(root: Path, classes="abc", n: int = 6, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for c in classes:
        (root / c).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            a = np.clip(np.array(COLOURS[c]) + rng.normal(0, 25, (16, 16, 3)), 0, 255)
            Image.fromarray(a.astype(np.uint8)).save(root / c / f"{i}.png")
    return root


@pytest.fixture
def ds(tmp_path) -> Path:
    make_tree(tmp_path / "ds" / "train", n=6)
    make_tree(tmp_path / "ds" / "test", n=2, seed=1)
    return tmp_path / "ds"


def cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def assert_one_line_error(res, needle: str) -> None:
    assert res.exit_code != 0, res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.startswith("error: ")]
    assert len(lines) == 1 and res.stderr.strip().splitlines()[-1] == lines[0], res.stderr
    assert needle in lines[0], lines[0]


def fake_run(tmp_path: Path, lineage: dict | None = None, arch: str = "resnet18") -> Path:
    """A hand-made train-student output: student.pth (plain state_dict) + student.json."""
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(3)
    sd = torchvision.models.get_model(arch, num_classes=1000).state_dict()
    torch.save(sd, run / "student.pth")
    side = {"format": "kdep-cache/student", "format_version": 1, "student": arch,
            "family": "resnet", "feature_dim": 512,
            "input": {"mean": [0.5, 0.5, 0.5], "std": [0.25, 0.25, 0.25], "image_size": 32},
            "settings": {"objective": "kdep", "epochs": 1}, "fingerprint": "f" * 64,
            "lineage": lineage or {"cache": "c" * 64, "images": "i" * 64, "images_root": None,
                                   "images_file": None, "n_images": 0}}
    (run / "student.json").write_text(json.dumps(signed(side, sd)))
    return run


# --- accuracy, aggregation ------------------------------------------------------------------

class Fixed(nn.Module):
    """Predicts class ``x[:, 0, 0, 0]`` (known predictions)."""

    def forward(self, x, want_logits=False, want_post=False):
        return {"logits": nn.functional.one_hot(x[:, 0, 0, 0].long(), 3).float()}


def test_accuracy_on_known_predictions():
    preds = torch.tensor([0, 1, 2, 2, 1, 0, 0, 2]).float()
    x = preds.view(-1, 1, 1, 1).expand(-1, 3, 1, 1).contiguous()
    y = torch.tensor([0, 1, 2, 0, 1, 0, 1, 2])  # 6 of 8 right
    batches = [(x[:3], y[:3]), (x[3:], y[3:])]
    r = ft.evaluate(Fixed(), batches, torch.device("cpu"), "fp32", ["a", "b", "c"])
    assert r["test_top1"] == pytest.approx(75.0)
    # by hand: class a (y at 0, 3, 5) predicted 0, 2, 0 -> 2/3; b (1, 4, 6) -> 1, 1, 0 -> 2/3;
    # c (2, 7) -> 2, 2 -> 1; balanced = mean of the three recalls = 7/9
    assert r["test_balanced"] == pytest.approx(700 / 9)
    assert r["test_per_class"] == pytest.approx({"a": 200 / 3, "b": 200 / 3, "c": 100.0})
    assert linear.accuracy([1, 2, 3], [1, 0, 3]) == pytest.approx(200 / 3)
    s = ft.summarize([{"epoch": 1, "test_top1": 50.0}, {"epoch": 2, "test_top1": 80.0},
                      {"epoch": 3, "test_top1": 80.0}, {"epoch": 4, "test_top1": 60.0}])
    assert (s["final_top1"], s["best_top1"], s["best_epoch"]) == (60.0, 80.0, 2)


def test_a_fine_tune_that_puts_every_test_image_in_one_class_says_so():
    """Issue 24: random-init MobileNetV2, 3 epochs at lr 0.01, read 10.00 ± 0.00 (chance)."""
    y = torch.tensor([0, 1, 2, 0, 1, 2])
    const = torch.full((6, 3, 1, 1), 2.0)  # Fixed predicts class 2 for every image
    r = ft.evaluate(Fixed(), [(const, y)], torch.device("cpu"), "fp32", ["a", "b", "c"])
    assert r["test_classes_predicted"] == 1
    hist = [{"epoch": 1, "acc": 0.328, **r}]
    w = ft.one_class_warning(ft.summarize(hist), hist, seed=4)
    assert w.startswith("fine-tune seed 4: the network predicts 'c' for every test image, so "
                        "its test top-1 (33.33) is that class's share; its train-mode accuracy in the last "
                        "epoch was 32.8 %")
    mixed = torch.tensor([0, 1, 2, 2, 2, 2], dtype=torch.float).view(-1, 1, 1, 1).expand(-1, 3, 1, 1)
    r = ft.evaluate(Fixed(), [(mixed.contiguous(), y)], torch.device("cpu"), "fp32", ["a", "b", "c"])
    assert r["test_classes_predicted"] == 3
    hist = [{"epoch": 1, **r}]
    assert ft.one_class_warning(ft.summarize(hist), hist, seed=0) is None  # a real result: no line


def test_balanced_accuracy_on_known_confusion():
    from kdep_cache.transfer.classification import metrics
    # 4:1 imbalance, the majority class always predicted: confusion [[8, 0], [2, 0]]
    y, pred = [0] * 8 + [1] * 2, [0] * 10
    assert metrics.confusion(pred, y, 2).tolist() == [[8, 0], [2, 0]]
    assert metrics.accuracy(pred, y) == pytest.approx(80.0)
    assert metrics.balanced_accuracy(pred, y, 2) == pytest.approx(50.0)  # (8/8 + 0/2) / 2
    assert metrics.per_class_accuracy(pred, y, ["maj", "min"]) == {"maj": 100.0, "min": 0.0}
    # confusion [[3, 1, 0], [1, 1, 0], [0, 0, 0]]: recalls 3/4, 1/2, class 2 absent -> 62.5
    y, pred = [0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 0, 1]
    assert metrics.balanced_accuracy(pred, y, 3) == pytest.approx(62.5)
    assert metrics.per_class_accuracy(pred, y, ["a", "b", "c"])["c"] is None


def test_aggregate_mean_std():
    a = aggregate([70.0, 72.0, 74.0])
    assert a["mean"] == pytest.approx(72.0) and a["std"] == pytest.approx(2.0) and a["n"] == 3
    assert aggregate([71.5]) == {"mean": 71.5, "std": None, "n": 1, "values": [71.5]}


# --- linear probe never sees the test data --------------------------------------------------

def test_linear_probe_chooses_c_on_train_only(monkeypatch, caplog):
    rng = np.random.default_rng(0)
    y_tr = np.repeat(np.arange(3), 20)
    x_tr = rng.normal(0, 1, (60, 8)) + y_tr[:, None] * 0.7
    x_te = rng.normal(0, 1, (15, 8)) + 1000.0  # distinct rows: easy to spot if ever fitted on
    y_te = np.repeat(np.arange(3), 5)
    fitted: list[np.ndarray] = []
    real = linear.make_probe

    def spy(c, seed):
        probe = real(c, seed)
        orig = probe.fit
        probe.fit = lambda x, y: (fitted.append(np.asarray(x)), orig(x, y))[1]
        return probe

    monkeypatch.setattr(linear, "make_probe", spy)
    with caplog.at_level("INFO", logger=linear.__name__):
        r1 = linear.linear_probe((x_tr, y_tr), (x_te, y_te), seed=0)
    # issue 24: each grid fit says so (minutes of silence per seed on 1280-d features)
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("linear probe")]
    n = len(linear.C_GRID)
    assert len(said) == n and said[-1].startswith(f"linear probe seed 0: C=100 ({n}/{n}) val top-1")
    assert len(fitted) == len(linear.C_GRID) + 1  # grid on the held-out split, then one refit
    assert all(f.max() < 500 for f in fitted), "a probe was fitted on test features"
    assert all(len(f) == 48 for f in fitted[:-1]) and len(fitted[-1]) == 60
    adversarial = (x_te, (y_te + 1) % 3)  # test labels changed: the choice of C must not move
    r2 = linear.linear_probe((x_tr, y_tr), adversarial, seed=0)
    assert (r1["C"], r1["val_top1"], r1["val_grid"]) == (r2["C"], r2["val_top1"], r2["val_grid"])
    assert r1["n_val"] == 12 and r1["stratified"]


# --- students --------------------------------------------------------------------------------

def test_students_random_plain_and_train_student_run(tmp_path):
    rnd = resolve_student("random:resnet18")
    assert rnd.kind == "random" and rnd.label == "random:resnet18" and rnd.image_size is None
    a, b = rnd.build(5, seed=0), rnd.build(5, seed=0)
    assert torch.equal(a.net.conv1.weight, b.net.conv1.weight)  # seeded
    assert a.net.fc.out_features == 5

    sd = torchvision.models.resnet18().state_dict()
    torch.save(sd, tmp_path / "plain.pth")
    with pytest.raises(InputError, match="--arch"):
        resolve_student(str(tmp_path / "plain.pth"))
    plain = resolve_student(str(tmp_path / "plain.pth"), arch="resnet18")
    net = plain.build(4, seed=1)
    assert plain.kind == "state_dict" and plain.label == "plain"
    assert torch.equal(net.net.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])
    assert net.net.fc.out_features == 4  # new head, not the 1000-class one
    assert plain.mean_std[0] == [0.485, 0.456, 0.406]
    torch.save({"model": {f"net.{k}": v for k, v in sd.items()}, "epoch": 3}, tmp_path / "c.pt")
    loop_ckpt = resolve_student(str(tmp_path / "c.pt"), arch="resnet18").build(4, seed=1)
    assert torch.equal(loop_ckpt.net.layer4[1].conv2.weight, sd["layer4.1.conv2.weight"])

    run = fake_run(tmp_path)
    for spec in (run, run / "student.pth"):
        st = resolve_student(str(spec))
        assert st.kind == "run" and st.arch == "resnet18" and st.label == "run"
        assert st.image_size == 32 and st.mean_std == ([0.5] * 3, [0.25] * 3)
        side = json.loads((run / "student.json").read_text())
        assert st.to_json()["fingerprint"] == side["fingerprint"] and st.to_json()["lineage"][
            "cache"]
    with pytest.raises(InputError, match="contradicts"):
        resolve_student(str(run), arch="resnet34")


def test_misfit_checkpoint_names_keys(tmp_path, ds):
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(ArtifactError, match=r"missing keys layer\d"):
        resolve_student(str(tmp_path / "r18.pth"), arch="resnet34")
    res = cli("transfer", "--student", tmp_path / "r18.pth", "--arch", "resnet34", "--data", ds,
              "--out", tmp_path / "o", *FAST)
    assert_one_line_error(res, "does not fit the architecture")
    assert not (tmp_path / "o").exists()


# --- datasets --------------------------------------------------------------------------------

def test_dataset_errors_and_seeded_split(tmp_path):
    one = make_tree(tmp_path / "one" / "train", classes="a").parent
    make_tree(one / "test", classes="a", n=2)
    with pytest.raises(InputError, match="at least 2"):
        open_downstream(str(one))
    empty = make_tree(tmp_path / "empty" / "train").parent
    (empty / "test").mkdir()
    with pytest.raises(InputError, match="no images"):
        open_downstream(str(empty))
    extra = make_tree(tmp_path / "extra" / "train", classes="ab").parent
    make_tree(extra / "test", classes="abc", n=2)
    with pytest.raises(InputError, match="test classes missing from train: c"):
        open_downstream(str(extra))
    res = cli("transfer", "--student", "random:resnet18", "--data", extra, "--out",
              tmp_path / "o", *FAST)
    assert_one_line_error(res, "missing from train")

    flat = make_tree(tmp_path / "flat", n=5)
    d1, d2 = open_downstream(str(flat)), open_downstream(str(flat), split_seed=1)
    assert d1.split == {"kind": "seeded-stratified", "from": ".", "test_fraction": 0.2,
                        "seed": 0}
    assert len(d1.test) == 3 and len(d1.train) == 12  # one per class (round(0.2 * 5))
    assert sorted(d1.test.labels) == [0, 1, 2]
    assert d1.fingerprint == open_downstream(str(flat)).fingerprint != d2.fingerprint
    assert not set(d1.test.paths) & set(d1.train.paths)


# --- linear and fine-tuning end to end -------------------------------------------------------

def test_linear_multi_seed_results(tmp_path, ds):
    out = tmp_path / "lin"
    res = cli("transfer", "--student", "random:resnet18", "--data", ds, "--out", out,
              "--seeds", "0,1", "--json", *FAST)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["format"] == "kdep-cache/transfer" and r["protocol"]["mode"] == "linear"
    assert r["dataset"]["n_classes"] == 3 and (r["dataset"]["n_train"], r["dataset"]["n_test"]) \
        == (18, 6)
    accs = [s["test_top1"] for s in r["seeds"]]
    assert [s["seed"] for s in r["seeds"]] == [0, 1] and all(s["C"] in linear.C_GRID
                                                             for s in r["seeds"])
    assert r["summary"]["test_top1"]["mean"] == pytest.approx(statistics.fmean(accs))
    assert r["summary"]["test_top1"]["std"] == pytest.approx(statistics.stdev(accs))
    again = cli("transfer", "--student", "random:resnet18", "--data", ds, "--out", out,
                "--seeds", "0,1", "--json", *FAST)
    assert json.loads(again.stdout)["note"] == "already done"
    for x in r["seeds"]:  # the probe records its convergence and every score
        assert x["converged"] is True and 0 < x["n_iter"] <= x["max_iter"] == linear.MAX_ITER
        assert x["warning"] is None and x["grid_not_converged"] >= 0
        assert set(x["test_per_class"]) == {"a", "b", "c"}
        assert x["test_balanced"] == pytest.approx(statistics.fmean(x["test_per_class"].values()))
    assert r["summary"]["test_balanced"]["n"] == 2
    t = cmp.build_table([str(out)], "balanced")
    assert t.columns == ["ds balanced acc.", "mean"] and "balanced acc." in t.title
    t = cmp.build_table([str(out)], "class:b")
    assert t.cells["random:resnet18", "ds b acc."].by_seed == {
        x["seed"]: x["test_per_class"]["b"] for x in r["seeds"]}
    assert_one_line_error(cli("compare", out, "--metric", "class:zebra"), "no class 'zebra'")
    assert_one_line_error(cli("compare", out, "--metric", "miou"), "does not apply")
    assert_one_line_error(cli("compare", out, "--metric", "top5"), "--metric must be one of")


def test_image_size_from_the_data(tmp_path):
    from kdep_cache.transfer.sizes import size_from_sides
    # median, rounded to a multiple of 8, clamped to the task's range
    assert size_from_sides([30, 37, 100], "classification") == 40  # 37 / 8 = 4.6 -> 5 * 8
    assert size_from_sides([44, 60, 61], "classification") == 64  # 60 / 8 = 7.5 -> 8 * 8
    assert size_from_sides([500, 375, 333], "classification") == 224  # clamped
    assert size_from_sides([500, 375, 333], "segmentation") == 376
    assert size_from_sides([10, 12], "detection") == 32
    ds = tmp_path / "ds"
    make_tree(ds / "train", n=4)
    make_tree(ds / "test", n=1, seed=1)
    for img in (ds / "train" / "a").iterdir():  # 16 px images, a few 48 px ones
        Image.new("RGB", (48, 56)).save(img)
    out = tmp_path / "o"
    fast = [a for a in FAST if a not in ("--image-size", "32")]
    res = cli("transfer", "--student", "random:resnet18", "--data", ds, "--out", out,
              "--seeds", "0", *fast)
    assert res.exit_code == 0, res.output
    p = json.loads((out / "results.json").read_text())["protocol"]
    # shorter sides: 4 x 48 and 8 x 16 -> median 16 -> clamped up to 32
    assert p["image_size"] == 32 and p["image_size_source"] == \
        "data: median shorter side of 12 images"


def test_finetune_relu_present_and_resume(tmp_path, ds, monkeypatch):
    heads_in: list[float] = []
    real_head = FeatureNet.head
    monkeypatch.setattr(FeatureNet, "head",
                        lambda self, post: (heads_in.append(float(post.detach().min())),
                                            real_head(self, post))[1])
    calls = {"n": 0}
    real_eval = ft.evaluate

    def interrupt_second(*a, **k):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt  # killed during epoch 2, after epoch 1's checkpoint
        return real_eval(*a, **k)

    monkeypatch.setattr(ft, "evaluate", interrupt_second)
    out = tmp_path / "ft"
    args = ["transfer", "--student", "random:resnet18", "--data", ds, "--out", out, "--mode",
            "finetune", "--epochs", "2", "--seeds", "0", *FAST]
    assert cli(*args).exit_code == 130
    assert heads_in and min(heads_in) >= 0.0  # the head reads post: final ReLU restored
    assert (out / "seed-0" / "checkpoint.pt").is_file() and not (out / "results.json").exists()
    assert_one_line_error(cli(*args), "--resume")
    res = cli(*args, "--resume", "--json")
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    s = r["seeds"][0]
    assert [h["epoch"] for h in s["history"]] == [1, 2] and s["epochs"] == 2
    assert s["final_top1"] == s["history"][-1]["test_top1"]
    assert s["best_top1"] == max(h["test_top1"] for h in s["history"])
    assert r["summary"]["best_top1"]["std"] is None and r["primary"] == "final_top1"
    assert r["protocol"]["lr"] == 0.001 and r["protocol"]["weight_decay"] == 5e-4
    lines = (out / "seed-0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["epoch"] for x in lines] == [1, 2]
    # #22.18: finished: checkpoint.pt (only for --resume) is removed, as train-student does
    assert not (out / "seed-0" / "checkpoint.pt").exists()


def test_keep_checkpoint_keeps_each_seeds_checkpoint(tmp_path, ds):
    out = tmp_path / "keep"
    res = cli("transfer", "--student", "random:resnet18", "--data", ds, "--out", out, "--mode",
              "finetune", "--epochs", "1", "--seeds", "0,1", "--keep-checkpoint", *FAST)
    assert res.exit_code == 0, res.output
    assert all((out / f"seed-{s}" / "checkpoint.pt").is_file() for s in (0, 1))


def test_finetune_net_post_is_nonnegative():
    net = resolve_student("random:resnet18").build(3, seed=0).eval()
    out = net(torch.randn(2, 3, 32, 32), want_logits=True)
    assert out["post"].min() >= 0 and out["pre"].min() < 0
    assert torch.allclose(out["logits"], net.net.fc(out["post"]))


# --- leakage ---------------------------------------------------------------------------------

def test_leakage_refused_unless_allowed(tmp_path, ds):
    listing = tmp_path / "images.json"
    paths = sorted(str(p.relative_to(ds)) for p in ds.rglob("*.png"))  # train AND test
    listing.write_text(json.dumps({"root": str(ds), "paths": paths}))
    run = fake_run(tmp_path, {"cache": "c" * 64, "images": "i", "images_root": str(ds),
                              "images_file": str(listing), "n_images": len(paths)})
    out = tmp_path / "leak"
    with pytest.raises(InputError, match="LEAKAGE: 6 of the 6"):
        transfer(TransferConfig(str(run), str(ds), str(out), image_size=32, seeds=(0,),
                                workers=0, device="cpu", precision="fp32"))
    assert_one_line_error(cli("transfer", "--student", run, "--data", ds, "--out", out, *FAST),
                          "LEAKAGE")
    res = cli("transfer", "--student", run, "--data", ds, "--out", out, "--seeds", "0",
              "--allow-leakage", *FAST)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["leakage"]["overlap"] == 6 and r["leakage"]["allowed"]
    assert r["student"]["lineage"]["images_file"] == str(listing)
    assert r["protocol"]["mean"] == [0.5] * 3  # the student's recorded normalization


# --- compare ---------------------------------------------------------------------------------

def _result(d: Path, label: str, dataset: str, vals: list[float], mode: str = "linear"):
    d.mkdir(parents=True)
    key = "test_top1" if mode == "linear" else "final_top1"
    seeds = [{"seed": i, key: v, "best_top1": v + 1} for i, v in enumerate(vals)]
    summ = {k: aggregate([s[k] for s in seeds]) for k in (key, "best_top1")}
    (d / "results.json").write_text(json.dumps({
        "format": "kdep-cache/transfer", "student": {"label": label},
        "dataset": {"path": f"/data/{dataset}", "fingerprint": dataset * 8},
        "protocol": {"mode": mode}, "seeds": seeds, "summary": summ}))
    return d


def test_compare_table(tmp_path, monkeypatch):
    dirs = [_result(tmp_path / "1", "kdep", "cifar", [70.0, 72.0]),
            _result(tmp_path / "2", "kdep", "flowers", [80.0, 84.0]),
            _result(tmp_path / "3", "random", "cifar", [40.0, 40.0])]
    t = cmp.build_table([str(d) for d in dirs])
    assert t.rows == ["kdep", "random"] and t.columns == ["cifar", "flowers", "mean"]
    assert t.cells["kdep", "cifar"].text() == "71.00 ± 1.41"
    assert t.cells["kdep", "mean"].text() == f"76.50 ± {math.sqrt(4.5):.2f}"  # per-seed means
    assert ("random", "mean") not in t.cells  # incomplete row: no mean
    text = cmp.format_text(t)
    random_line = [ln for ln in text.splitlines() if ln.startswith("random")][0]
    assert "71.00 ± 1.41" in text and random_line.split()[-2:] == ["-", "-"]
    rows = list(csv.DictReader(io.StringIO(cmp.to_csv(t))))
    assert rows[0]["flowers mean"] == "82.0000" and rows[1]["flowers mean"] == ""
    md = cmp.to_markdown(t).splitlines()
    assert md[2] == "| student | cifar | flowers | mean |" and md[4].startswith("| kdep | 71.00")

    res = cli("compare", *dirs, "--csv", tmp_path / "t.csv", "--markdown", tmp_path / "t.md")
    assert res.exit_code == 0 and "kdep" in res.stdout
    assert (tmp_path / "t.csv").read_text() == cmp.to_csv(t)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # as if not installed
    assert_one_line_error(cli("compare", *dirs, "--plot", tmp_path / "p.png"),
                          "pip install matplotlib")
    assert_one_line_error(cli("compare", dirs[0], dirs[0]), "give one of them another --label")
    assert_one_line_error(cli("compare", tmp_path / "nothing"), "nothing does not exist")
    (tmp_path / "empty").mkdir()
    assert_one_line_error(cli("compare", tmp_path / "empty"), "no results.json (is the transfer")


def test_compare_finetune_best_vs_final(tmp_path):
    d = _result(tmp_path / "f", "kdep", "cifar", [70.0], mode="finetune")
    assert cmp.build_table([str(d)]).cells["kdep", "cifar"].text() == "70.00"
    best = cmp.build_table([str(d)], metric="best")
    assert best.cells["kdep", "cifar"].text() == "71.00" and "best epoch" in best.title


@pytest.mark.slow  # a fresh matplotlib font cache is built in a subprocess
def test_compare_plot_quiet_and_title_wrapped(tmp_path):
    import os
    import subprocess
    dirs = [_result(tmp_path / "1", "kdep", "cifar", [70.0, 72.0]),
            _result(tmp_path / "2", "random", "cifar", [40.0, 41.0])]
    env = {**os.environ, "MPLCONFIGDIR": str(tmp_path / "mpl")}  # fresh font cache: matplotlib
    # the library with a root logger at INFO (the CLI keeps third-party loggers at WARNING)
    code = ("import logging, sys; logging.basicConfig(level=logging.INFO); "
            "from kdep_cache.transfer import compare as c; "
            "c.plot(c.build_table(sys.argv[1:-1]), sys.argv[-1])")
    res = subprocess.run([sys.executable, "-c", code, *map(str, dirs), str(tmp_path / "p.png")],
                         capture_output=True, text=True, env=env,
                         timeout=120)  # builds its font cache: "INFO matplotlib.font_manager"
    assert res.returncode == 0, res.stderr
    assert "matplotlib" not in res.stderr and (tmp_path / "p.png").stat().st_size > 1000


def test_nonfinite_loss_advice_names_transfer_options(tmp_path, ds):
    """#22.16: transfer's non-finite-loss line advises --lr, not train-student's --loss-weight."""
    res = cli("transfer", "--student", "random:resnet18", "--data", ds, "--out", tmp_path / "o",
              "--mode", "finetune", "--epochs", "1", "--lr", "1e30", "--seeds", "0", *FAST)
    assert_one_line_error(res, "non-finite loss")
    assert res.exit_code == 4 and "--loss-weight" not in res.stderr
    assert "lower --lr (this run used 1e+30)" in res.stderr


def test_options_that_do_not_apply_are_warned_about():
    """#23.15: linear transfer with --epochs / --lr, and --lr-step with a schedule other than
    step, were ignored without a word."""
    from kdep_cache.transfer.run import ignored_options, resolved
    lin = TransferConfig("random:resnet18", "d", "o", epochs=5, lr=0.1)
    (line,) = ignored_options(lin, resolved(lin))
    assert line.startswith("--epochs, --lr ignored: the linear probe")
    ft_ = TransferConfig("random:resnet18", "d", "o", mode="finetune", schedule="constant",
                         lr_step=3)
    assert ignored_options(ft_, resolved(ft_)) == [
        "--lr-step ignored: it sets the step of --schedule step, not of --schedule constant"]
    for fine in (TransferConfig("r", "d", "o", mode="finetune", epochs=5, lr=0.1, lr_step=2),
                 TransferConfig("r", "d", "o")):
        assert ignored_options(fine, resolved(fine)) == []
    dense = TransferConfig("r", "d", "o", task="segmentation", lr_step=2)  # poly by default
    assert "not of --schedule poly" in ignored_options(dense, resolved(dense))[0]


def test_nan_student_weights_in_the_linear_probe_is_one_line(tmp_path, ds):
    """#23.9: a student whose weights hold NaN ended in sklearn's 'Input contains NaN' as an
    internal error."""
    torch.manual_seed(0)
    sd = torchvision.models.resnet18().state_dict()
    sd["layer4.1.conv2.weight"][0, 0, 1, 1] = float("nan")  # the centre: 1x1 maps at 32 px
    torch.save(sd, tmp_path / "nan.pth")
    res = cli("transfer", "--student", tmp_path / "nan.pth", "--arch", "resnet18", "--data", ds,
              "--out", tmp_path / "o", "--seeds", "0", *FAST)
    assert_one_line_error(res, "features are not finite (NaN / inf) on 18 of the 18 train")
    assert not (tmp_path / "o" / "results.json").exists()
