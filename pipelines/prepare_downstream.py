"""Write the repro-small datasets as ImageFolder trees (PNG/JPEG files, train/ + test/).

- D_u: a class-balanced fraction of CIFAR-10 train (labels kept in folders; distillation
  ignores them, the supervised baseline uses them);
- cifar10: fixed per-class subsets of CIFAR-10 train (disjoint from D_u) and test;
- fashion: Fashion-MNIST from Debian's dataset-fashion-mnist (/usr/share/datasets);
- digits: scikit-learn's bundled 8x8 digits (seeded, stratified 50/50 split).
Every draw is seeded; rerunning writes the same files (existing trees are kept).
"""

from __future__ import annotations

import argparse
import gzip
import random
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

FASHION = Path("/usr/share/datasets/fashion-mnist")
FASHION_CLASSES = ["tshirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt",
                   "sneaker", "bag", "boot"]


def _pick(files, k, rng):
    if k > len(files):
        raise SystemExit(f"prepare_downstream: asked for {k} images per class but only "
                         f"{len(files)} are left (D_u and the CIFAR-10 downstream train split "
                         "are disjoint draws from one class folder of CIFAR-10 train)")
    return sorted(rng.sample(sorted(files), k))


def _fresh(out: Path, name: str) -> Path:
    """An empty scratch folder for one builder; its trees are published by :func:`_publish`."""
    tmp = out / f".tmp-{name}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    return tmp


def _publish(tmp: Path, out: Path, names) -> None:
    """Move finished trees into place: an interrupted run leaves no half-written tree that a
    rerun would take as done."""
    for n in names:
        shutil.rmtree(out / n, ignore_errors=True)
        (tmp / n).rename(out / n)
    shutil.rmtree(tmp)


def cifar(src: Path, out: Path, du_per_class: int, train_per_class: int, test_per_class: int,
          seed: int) -> None:
    if (out / "du").exists() and (out / "cifar10").exists():
        return
    if not (src / "train").is_dir() or not (src / "test").is_dir():
        raise SystemExit(f"CIFAR-10 JPEGs not found at {src} (expected train/<class>/*.jpg and "
                         "test/<class>/*.jpg; set \"cifar10\" in pipelines/repro-small.json)")
    tmp = _fresh(out, "cifar")
    rng = random.Random(seed)
    for c in sorted(p.name for p in (src / "train").iterdir()):
        files = sorted(p.name for p in (src / "train" / c).iterdir())
        du = _pick(files, du_per_class, rng)
        rest = sorted(set(files) - set(du))
        ds_train = _pick(rest, train_per_class, rng)
        ds_test = _pick([p.name for p in (src / "test" / c).iterdir()], test_per_class, rng)
        for split, names, base in (("du", du, "train"), ("cifar10/train", ds_train, "train"),
                                   ("cifar10/test", ds_test, "test")):
            d = tmp / split / c
            d.mkdir(parents=True, exist_ok=True)
            for n in names:
                shutil.copy2(src / base / c / n, d / n)
    _publish(tmp, out, ["du", "cifar10"])


def _idx(path: Path) -> np.ndarray:
    with gzip.open(path) as f:
        data = f.read()
    ndim = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def fashion(out: Path, train_per_class: int, test_per_class: int, seed: int) -> None:
    if (out / "fashion").exists():
        return
    if not FASHION.is_dir():
        raise SystemExit("Fashion-MNIST not found: apt-get install dataset-fashion-mnist")
    tmp = _fresh(out, "fashion")
    rng = np.random.default_rng(seed)
    for split, prefix, k in (("train", "train", train_per_class), ("test", "t10k", test_per_class)):
        x = _idx(FASHION / f"{prefix}-images-idx3-ubyte.gz")
        y = _idx(FASHION / f"{prefix}-labels-idx1-ubyte.gz")
        for c, name in enumerate(FASHION_CLASSES):
            d = tmp / "fashion" / split / name
            d.mkdir(parents=True, exist_ok=True)
            for i in np.sort(rng.choice(np.flatnonzero(y == c), k, replace=False)):
                Image.fromarray(x[i], "L").save(d / f"{i:05d}.png")
    _publish(tmp, out, ["fashion"])


def digits(out: Path, seed: int) -> None:
    if (out / "digits").exists():
        return
    from sklearn.datasets import load_digits
    d = load_digits()
    tmp = _fresh(out, "digits")
    rng = np.random.default_rng(seed)
    for c in range(10):
        idx = rng.permutation(np.flatnonzero(d.target == c))
        half = len(idx) // 2
        for split, ids in (("train", idx[:half]), ("test", idx[half:])):
            folder = tmp / "digits" / split / str(c)
            folder.mkdir(parents=True, exist_ok=True)
            for i in ids:
                img = (d.images[i] * (255.0 / 16.0)).round().astype(np.uint8)
                Image.fromarray(img, "L").save(folder / f"{i:04d}.png")
    _publish(tmp, out, ["digits"])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--cifar10", default="../shared/datasets/cifar10")
    ap.add_argument("--out", default="repro-out/datasets")
    ap.add_argument("--du-per-class", type=int, default=500)
    ap.add_argument("--train-per-class", type=int, default=100)
    ap.add_argument("--test-per-class", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    out = Path(a.out)
    cifar(Path(a.cifar10), out, a.du_per_class, a.train_per_class, a.test_per_class, a.seed)
    fashion(out, a.train_per_class, a.test_per_class, a.seed)
    digits(out, a.seed)


if __name__ == "__main__":
    main()
