"""Downstream datasets: ImageFolder-style ``DIR/train`` + ``DIR/test`` (or ``DIR/val``), or one
class-folder tree split here (seeded, class-stratified); the paper's transforms; loaders."""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from ...errors import ArtifactError, InputError
from ...runtime.dist import global_batches, rank_slice
from ...views.images import BadImage, ImageList, load_rgb, scan_images

log = logging.getLogger(__name__)


@dataclass
class Downstream:
    """Both splits (labels indexed into ``classes``, the train split's classes)."""

    path: str
    train: ImageList
    test: ImageList
    classes: list[str]
    split: dict

    @property
    def fingerprint(self) -> str:
        """sha256 of the sorted relative paths (to ``path``) of both splits."""
        lines = sorted(f"train\t{p}" for p in _rel(self.path, self.train)) + sorted(
            f"test\t{p}" for p in _rel(self.path, self.test))
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()

    def test_files(self) -> list[str]:
        return [os.path.join(self.test.root, p) for p in self.test.paths]

    def to_json(self) -> dict:
        return {"path": self.path, "fingerprint": self.fingerprint,
                "n_classes": len(self.classes), "classes": self.classes, "split": self.split,
                "n_train": len(self.train), "n_test": len(self.test)}


def _rel(root: str, il: ImageList) -> list[str]:
    prefix = os.path.relpath(il.root, root)
    return [p if prefix == "." else f"{Path(prefix).as_posix()}/{p}" for p in il.paths]


def _labelled(root: Path, what: str) -> ImageList:
    il = scan_images(root)
    if not il.classes:
        raise InputError(f"{what} {root} has no class subfolders (ImageFolder layout "
                         "CLASS/IMAGE expected)")
    keep = [i for i, y in enumerate(il.labels) if y >= 0]
    if len(keep) < len(il):
        log.warning("%s: ignoring %d files outside class folders (e.g. %s)", what,
                    len(il) - len(keep), il.paths[next(i for i, y in enumerate(il.labels) if y < 0)])
        il = ImageList(il.root, [il.paths[i] for i in keep], [il.labels[i] for i in keep],
                       il.classes)
    return il


def open_downstream(path: str, test_fraction: float = 0.2, split_seed: int = 0) -> Downstream:
    """Open ``path``; split it (seeded, stratified) when it has no train/test(val) folders."""
    root = Path(path)
    if not root.is_dir():
        raise InputError(f"--data {path} does not exist or is not a directory")
    root = root.resolve()
    test_dir = next((root / n for n in ("test", "val") if (root / n).is_dir()), None)
    if (root / "train").is_dir() and test_dir is not None:
        train = _labelled(root / "train", "train split")
        test = _labelled(test_dir, f"{test_dir.name} split")
        split = {"kind": "folders", "train": "train", "test": test_dir.name}
    elif test_dir is not None:
        raise InputError(f"{path} has a {test_dir.name}/ folder but no train/ folder")
    else:
        base = root / "train" if (root / "train").is_dir() else root
        train, test = stratified_split(_labelled(base, "dataset"), test_fraction, split_seed)
        split = {"kind": "seeded-stratified", "from": os.path.relpath(base, root),
                 "test_fraction": test_fraction, "seed": split_seed}
    classes = list(train.classes)
    if len(classes) < 2:
        raise InputError(f"{path}: the train split has {len(classes)} class(es); a "
                         "classification transfer needs at least 2")
    if not train.paths or not test.paths:
        raise InputError(f"{path}: the {'train' if not train.paths else 'test'} split is empty")
    missing = sorted(set(test.classes) - set(classes))
    if missing:
        raise InputError(f"{path}: test classes missing from train: {', '.join(missing[:5])}"
                         + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else ""))
    idx = {c: i for i, c in enumerate(classes)}
    test = ImageList(test.root, test.paths, [idx[test.classes[y]] for y in test.labels], classes)
    absent = sorted(set(classes) - {classes[y] for y in test.labels})
    if absent:
        log.warning("%d train classes have no test image (e.g. %s)", len(absent), absent[0])
    return Downstream(str(root), train, test, classes, split)


def stratified_split(il: ImageList, fraction: float, seed: int) -> tuple[ImageList, ImageList]:
    """Per class, ``round(fraction * n)`` images (at least 1, never all) go to test."""
    if not 0 < fraction < 1:
        raise InputError(f"test fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    labels = np.asarray(il.labels)
    test_ids: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = min(max(1, int(round(fraction * len(idx)))), len(idx) - 1)
        if k > 0:
            test_ids.extend(rng.choice(idx, size=k, replace=False).tolist())
    is_test = np.zeros(len(il), dtype=bool)
    is_test[test_ids] = True

    def pick(mask: np.ndarray) -> ImageList:
        ids = np.flatnonzero(mask)
        return ImageList(il.root, [il.paths[i] for i in ids], [il.labels[i] for i in ids],
                         il.classes)
    return pick(~is_test), pick(is_test)


def train_transform(size: int, mean, std) -> T.Compose:
    """Fine-tuning: RandomResizedCrop(S) + horizontal flip (the paper's recipe)."""
    return T.Compose([T.RandomResizedCrop(size), T.RandomHorizontalFlip(), T.ToTensor(),
                      T.Normalize(mean, std)])


def test_transform(size: int, mean, std) -> T.Compose:
    """Evaluation and linear-probe features: Resize(256/224 * S) + CenterCrop(S)."""
    return T.Compose([T.Resize(int(round(size * 256 / 224))), T.CenterCrop(size), T.ToTensor(),
                      T.Normalize(mean, std)])


class FolderDataset(Dataset):
    """Item ``j`` -> (image tensor, label, error reason or ""). ``blobs`` (relative path ->
    :class:`~kdep_cache.views.files.Blob`): read the images from there (a cache's pack), not
    from files."""

    def __init__(self, images: ImageList, transform, size: int, blobs=None):
        self.images, self.transform, self.size, self.blobs = images, transform, size, blobs

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, j: int):
        try:
            rel = self.images.paths[j]
            img = load_rgb(self.blobs(rel) if self.blobs else Path(self.images.root) / rel)
        except BadImage as e:
            return torch.zeros(3, self.size, self.size), -1, f"{self.images.paths[j]}: {e}"
        return self.transform(img), int(self.images.labels[j]), ""


class Batches:
    """``(x, y)`` batches of a split; an undecodable image stops with a one-line error.

    ``world > 1`` (torchrun, training): the epoch's seeded permutation is cut into global
    batches of ``batch_size`` and this rank takes its slice of each, yielding
    ``(x, y, weight)`` with weight = its share of the batch x world (see train/feed.py)."""

    def __init__(self, images: ImageList, transform, size: int, batch_size: int, workers: int,
                 shuffle: bool = False, seed: int = 0, pin: bool = False, rank: int = 0,
                 world: int = 1):
        n = len(images)
        ds = FolderDataset(images, transform, size)
        self.sizes = None
        if world > 1:
            order = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy()
            glob = global_batches(order, batch_size, world, drop_short=n % batch_size == 1)
            self.sizes = [len(b) for b in glob]
            self.loader = DataLoader(ds, batch_sampler=[rank_slice(b, rank, world) for b in glob],
                                     num_workers=workers, pin_memory=pin,
                                     worker_init_fn=_worker_init)
            self.world = world
            return
        self.loader = DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle,
            num_workers=workers, pin_memory=pin,
            drop_last=shuffle and n % batch_size == 1 and n > 1,  # no BatchNorm batch of 1
            generator=torch.Generator().manual_seed(seed), worker_init_fn=_worker_init)

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        for j, (x, y, reasons) in enumerate(self.loader):
            bad = [r for r in reasons if r]
            if bad:
                raise ArtifactError(f"cannot decode downstream image {bad[0]}: remove or "
                                    "replace it")
            if self.sizes is None:
                yield x, y
            else:
                yield x, y, len(y) * self.world / self.sizes[j]


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)
