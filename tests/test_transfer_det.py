"""Detection transfer: COCO AP by hand, exact boxes from both layouts, frozen BN against the
eval-mode network, the letterbox transform, and the CLI end to end on tiny real VOC / COCO
sets (CIFAR-10 photos pasted at known boxes, see tests/dense_fixtures.py)."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
import torchvision
from dense_fixtures import cli, make_dense, one_line_error

from kdep_cache.transfer.compare import build_table
from kdep_cache.transfer.dense import det
from kdep_cache.transfer.dense.layouts import VOC_CLASSES, open_dense
from kdep_cache.transfer.dense.metrics import coco_ap

FAST = ["--epochs", "1", "--batch-size", "2", "--seeds", "0", "--workers", "0",
        "--device", "cpu"]


def test_coco_ap_by_hand():
    # two ground-truth boxes; detections by score: exact hit on A (0.9), a false positive
    # (0.8), a box on B with IoU 62.5 / 100 = 0.625 (0.7)
    gt = [{"id": 1, "width": 100, "height": 100, "boxes": [[20, 20, 30, 30], [0, 0, 10, 10]],
           "labels": [1, 1]}]
    dets = [{"image_id": 1, "box": [20, 20, 30, 30], "label": 1, "score": 0.9},
            {"image_id": 1, "box": [50, 50, 60, 60], "label": 1, "score": 0.8},
            {"image_id": 1, "box": [0, 0, 10, 6.25], "label": 1, "score": 0.7}]
    # IoU thresholds 0.50, 0.55, 0.60: TP FP TP -> precision 1, 1/2, 2/3 at recall 1/2, 1/2, 1;
    # the interpolated precision is 1 at the 51 recall points 0..0.50 and 2/3 at the 50 points
    # 0.51..1 of COCO's 101: AP = (51 + 50 * 2/3) / 101. Thresholds 0.65..0.95 (7 of 10): the
    # third is a FP, recall stops at 1/2: AP = 51 / 101.
    hi, lo = (51 + 50 * 2 / 3) / 101, 51 / 101
    r = coco_ap(gt, dets, ["thing"])
    assert r["ap50"] == pytest.approx(100 * hi) and r["ap75"] == pytest.approx(100 * lo)
    assert r["ap"] == pytest.approx(100 * (3 * hi + 7 * lo) / 10)
    # the false positive on an ignored (difficult / crowd) box is not counted: 2 TP of 2
    gt[0]["boxes"].append([50, 50, 60, 60])
    gt[0]["labels"].append(1)
    gt[0]["ignore"] = [False, False, True]
    assert coco_ap(gt, dets, ["thing"])["ap50"] == pytest.approx(100.0)
    assert coco_ap(gt, [], ["thing"]) == {"ap": 0.0, "ap50": 0.0, "ap75": 0.0}


def test_boxes_exact_in_both_layouts(tmp_path):
    root, truth = make_dense(tmp_path / "voc", "voc")
    voc = open_dense(str(root), "detection")
    croot, _ = make_dense(tmp_path / "coco", "coco")
    coco = open_dense(str(croot), "detection")
    for split, samples in (("train", voc.train), ("val", voc.val)):
        for s, sc, t in zip(samples, getattr(coco, split), truth[split]):
            want = [[float(x), float(y), float(x + w), float(y + h)]
                    for _, x, y, w, h in t["objects"]]
            assert s.boxes == want and sc.boxes == want
            assert [VOC_CLASSES[i - 1] for i in s.labels] == [o[0] for o in t["objects"]]
            assert [coco.classes[i - 1] for i in sc.labels] == [o[0] for o in t["objects"]]
            assert (s.width, s.height) == tuple(t["size"]) == (sc.width, sc.height)


def test_frozen_bn_equals_eval_mode_network():
    torch.manual_seed(0)
    net = torchvision.models.resnet18()
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 32, 32)
    ref = net.eval()(x)
    frozen = det.freeze_bn(copy.deepcopy(net)).train()  # train mode: statistics stay fixed
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in frozen.modules())
    torch.testing.assert_close(frozen(x), ref, rtol=1e-4, atol=1e-5)


def test_letterbox_boxes(tmp_path):
    root, truth = make_dense(tmp_path / "voc", "voc", n_train=2, n_val=1)
    data = open_dense(str(root), "detection")
    ds = det.DetDataset(data.path, data.train, 36, [0.5, 0.4, 0.3])
    for j, t in enumerate(truth["train"]):
        w, h = t["size"]
        scale = 36 / max(w, h)
        sw, sh = round(w * scale) / w, round(h * scale) / h
        torch.manual_seed(j)
        flip = bool(torch.rand(()) < 0.5)
        torch.manual_seed(j)
        x, boxes, err = ds[j]
        assert err == "" and x.shape == (3, 36, 36)
        for (name, bx, by, bw, bh), row in zip(t["objects"], boxes.tolist()):
            x1, x2 = bx * sw, (bx + bw) * sw
            if flip:
                x1, x2 = 36 - x2, 36 - x1
            assert row == pytest.approx([VOC_CLASSES.index(name) + 1, x1, by * sh, x2,
                                         (by + bh) * sh], abs=1e-4)


@pytest.mark.parametrize("layout,arch", [("voc", "resnet18"), ("coco", "mobilenet_v2")])
def test_detection_transfer_cli(tmp_path, layout, arch):
    """VOC: a plain state_dict student (frozen BN, 3 trainable stages); COCO: random init."""
    root, _ = make_dense(tmp_path / layout, layout, n_train=2, n_val=2)
    out = tmp_path / "out"
    if layout == "voc":
        torch.manual_seed(0)
        torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
        student, label = ["--student", tmp_path / "r18.pth", "--arch", arch], "r18"
    else:
        student, label = ["--student", f"random:{arch}"], f"random:{arch}"
    res = cli("transfer", "--task", "detection", *student, "--data", root,
              "--out", out, "--image-size", "48", *FAST)
    assert res.exit_code == 0, res.output
    r = json.loads((out / "results.json").read_text())
    assert r["protocol"]["task"] == "detection" and r["primary"] == "ap"
    assert r["protocol"]["image_size"] == 48 and r["dataset"]["n_boxes"]["test"] > 0
    s = r["seeds"][0]
    for k in ("ap", "ap50", "ap75"):
        assert 0 <= s[k] <= 100 and not math.isnan(s[k]) and r["summary"][k]["n"] == 1
    assert s["ap50"] >= s["ap75"]
    assert (out / "seed-0" / "metrics.jsonl").is_file()
    t = build_table([str(out)], "ap50")
    assert t.columns == [f"{layout} AP50", "mean"]
    assert t.cells[label, f"{layout} AP50"].mean == s["ap50"]
    frozen = r["protocol"]["backbone"]
    assert "FrozenBatchNorm2d" in frozen


def test_detection_errors(tmp_path):
    root, _ = make_dense(tmp_path / "voc", "voc", n_train=2, n_val=1)
    base = ["transfer", "--task", "detection", "--student", "random:resnet18", "--out",
            tmp_path / "o", *FAST]
    xml = root / "Annotations" / "train_0000.xml"
    good = xml.read_text()
    xml.write_text(good.replace("<name>cat</name>", "<name>tiger</name>").replace(
        "<name>boat</name>", "<name>tiger</name>"))
    one_line_error(cli(*base, "--data", root), "class name 'tiger' is not in the class list")
    w = int(good.split("<width>")[1].split("<")[0])
    xmax = good.split("<xmax>")[1].split("<")[0]
    xml.write_text(good.replace(f"<xmax>{xmax}</xmax>", f"<xmax>{w + 5}</xmax>", 1))
    one_line_error(cli(*base, "--data", root), "lies outside its")
    xml.unlink()
    one_line_error(cli(*base, "--data", root), "no boxes for detection")
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n")
    one_line_error(cli(*base, "--data", root), "train.txt lists no images: the split is empty")

    croot, _ = make_dense(tmp_path / "coco", "coco", n_train=2, n_val=1)
    f = croot / "annotations" / "instances_val.json"
    doc = json.loads(f.read_text())
    a = doc["annotations"][0]
    a["bbox"][0] = doc["images"][0]["width"] - 2
    f.write_text(json.dumps(doc))
    one_line_error(cli(*base, "--data", croot), "lies outside its")
    a["category_id"] = 5
    f.write_text(json.dumps(doc))
    one_line_error(cli(*base, "--data", croot), "category_id 5, not in the categories list")
    f.write_text(json.dumps({**doc, "images": [], "annotations": []}))
    one_line_error(cli(*base, "--data", croot), "holds no images: the val split is empty")


def test_train_and_eval_preprocess_an_image_identically(tmp_path):
    """#22.15: the detector's transform sees the same tensor for an image in training (without
    the flip) and in evaluation: one letterbox (bilinear, mean fill) for both."""
    root, _ = make_dense(tmp_path / "voc", "voc", n_train=2, n_val=1)
    data = open_dense(str(root), "detection")
    mean, std, size = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3], 48
    torch.manual_seed(0)
    net = det.DetNet(det.build_detector(torchvision.models.resnet18(), "resnet", 2, size, mean,
                                        std, pretrained=False))
    seen = []
    net.detector.transform.register_forward_hook(lambda m, i, o: seen.append(o[0].tensors))
    det.evaluate(net, data.path, data.train[:1], data.classes, "cpu", size)
    x, _, err = det.DetDataset(data.path, data.train[:1], size, mean, flip=False)[0]
    assert err == "" and x.shape == (3, size, size)
    net.detector.train()
    net.detector.transform([x])
    assert len(seen) == 2 and seen[0].shape == seen[1].shape
    torch.testing.assert_close(seen[0], seen[1], rtol=0, atol=0)
    w, h = load_size(data, 0)
    pad = seen[0][0, :, :, round(w * size / max(w, h)) + 1:]
    assert pad.numel() == 0 or pad.abs().max() < 1e-6  # the fill is the mean: 0 once normalised


def load_size(data, j):
    s = data.train[j]
    return s.width, s.height


def test_eval_boxes_map_back_to_image_pixels(tmp_path):
    """A detector answering each val image's true boxes in canvas coordinates scores AP 100."""
    root, _ = make_dense(tmp_path / "voc", "voc", n_train=2, n_val=3)
    data = open_dense(str(root), "detection")
    size, mean = 40, [0.5, 0.5, 0.5]
    canvas = [det.DetDataset(data.path, data.val, size, mean, flip=False)[j][1]
              for j in range(len(data.val))]

    class Oracle(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.transform = type("T", (), {"image_mean": mean})()
            self.answers = iter(canvas)

        def forward(self, images):
            t = next(self.answers)
            return [{"boxes": t[:, 1:], "labels": t[:, 0].long(),
                     "scores": torch.ones(len(t))}]

    r = det.evaluate(det.DetNet(Oracle()), data.path, data.val, data.classes, "cpu", size)
    assert r["ap"] == pytest.approx(100.0, abs=1e-6)


@pytest.mark.parametrize("task,layout", [("detection", "voc"), ("segmentation", "coco")])
def test_missing_pycocotools_names_the_extra_before_training(tmp_path, monkeypatch, task,
                                                             layout):
    """#23.9: without the optional extra, detection (and COCO masks) ended in
    ModuleNotFoundError: pycocotools as an internal error, after the training."""
    import sys
    root, _ = make_dense(tmp_path / layout, layout, n_train=2, n_val=1)
    for name in [m for m in sys.modules if m.startswith("pycocotools")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # as if not installed
    res = cli("transfer", "--task", task, "--student", "random:resnet18", "--data", root,
              "--out", tmp_path / "o", "--image-size", "32", *FAST)
    one_line_error(res, "pycocotools, which is not installed: pip install pycocotools (or pip "
                        "install 'kdep-cache[det]')")
    assert not (tmp_path / "o" / "seed-0").exists()  # refused before any training
