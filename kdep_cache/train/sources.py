"""Where a student run gets its images, stored views and per-batch targets from."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..augment import AugmentSpec
from ..cache.manifest import IMAGES
from ..cache.schema import RAW, TARGETS
from ..cache.store import Store
from ..data import collate, render_views, worker_init
from ..errors import ArtifactError, InputError, LineageError
from ..fsio import read_json
from ..identity import ARRAYS as IDENTITY
from ..identity import check_batch, check_sizes
from ..images import ImageList, scan_images
from ..models.registry import NORMALIZATIONS, normalization


@dataclass
class Source:
    images: ImageList
    ids: np.ndarray            # usable image ids (valid in the cache)
    cache: Store | None
    targets: Store | None
    mean: tuple
    std: tuple
    image_size: int
    views: int                 # K (0 = fresh augmentations every epoch, no cache)
    spec: AugmentSpec
    seed: int

    def lineage(self) -> dict:
        return {"cache": self.cache.fingerprint if self.cache else None,
                "targets": self.targets.fingerprint if self.targets else None,
                "projection": self.targets.manifest.get("projection_fingerprint")
                if self.targets else None,
                "images": self.images.fingerprint, "images_root": self.images.root,
                "n_images": len(self.ids),
                "images_file": str((self.cache.dir / IMAGES).resolve()) if self.cache else None,
                "cache_dir": str(self.cache.dir.resolve()) if self.cache else None,
                "targets_dir": str(self.targets.dir.resolve()) if self.targets else None}


def open_source(targets: str | None, cache: str | None, data: str | None, needs: str,
                image_size: int | None, seed: int, max_views: int | None = None) -> Source:
    tstore = Store(targets, TARGETS) if targets else None
    if needs in ("targets", "teacher") and tstore is None:
        raise InputError("this objective trains on aligned targets: pass --targets (a fit-svd "
                         "output)")
    if cache is None and tstore is not None:
        cache = tstore.manifest["source_cache"]
        if not Path(cache).is_dir():
            raise InputError(f"the cache {cache} these targets were built from has moved: pass "
                             "--cache NEW_PATH")
    if cache is None:
        if needs != "labels" or data is None:
            raise InputError(f"objective needs {needs}: pass --cache (an extract output)"
                             if needs != "labels" else "pass --data DIR (or --cache)")
        return _fresh_source(data, image_size or 224, seed)
    cstore = Store(cache, RAW)
    if tstore is not None and tstore.manifest["cache_fingerprint"] != cstore.fingerprint:
        raise LineageError(f"targets {targets} were built from cache "
                           f"{tstore.manifest['cache_fingerprint'][:16]}, but {cache} is "
                           f"{cstore.fingerprint[:16]}")
    if needs in ("logits", "post") and not cstore.has(needs):
        flag = "--save-logits" if needs == "logits" else "--save-post"
        raise InputError(f"cache {cache} has no teacher {needs}: re-extract with {flag}")
    images = ImageList.from_json(read_json(cstore.dir / IMAGES),
                                 root=str(Path(data).resolve()) if data else None)
    if data is not None:
        _check_images_present(images)
    cstore.check_all()  # every shard is the one its manifest lists, before any work
    if tstore is not None:
        tstore.check_all()
    valid = np.concatenate([v for _, _, v in cstore.iter_shards("valid")]).astype(bool)
    if all(cstore.has(a) for a in IDENTITY):
        ids = np.flatnonzero(valid)
        check_sizes(images, ids, cstore.read("file_size", ids), "the cache was extracted from")
    if needs == "labels" and min(images.labels, default=-1) < 0:
        raise InputError("the supervised objective needs class subfolders (labels) in the images")
    s = cstore.manifest["settings"]
    mean, std = normalization(s["teacher"])
    if max_views is not None and not 1 <= max_views <= cstore.views:
        raise InputError(f"--max-views must be in 1..{cstore.views} (the cache's K)")
    return Source(images, np.flatnonzero(valid), cstore, tstore, mean, std,
                  image_size or s["image_size"], max_views or cstore.views,
                  AugmentSpec.from_json(s["augment"]), s["seed"])


def _check_images_present(images: ImageList) -> None:
    missing = [p for p in images.paths if not os.path.exists(os.path.join(images.root, p))]
    if missing:
        raise LineageError(f"{len(missing)} of the {len(images)} cached images are missing under "
                           f"{images.root}, e.g. {', '.join(missing[:3])}: point --data at the "
                           "folder the cache was extracted from")


def _fresh_source(data: str, size: int, seed: int) -> Source:
    images = scan_images(data)
    if min(images.labels) < 0:
        raise InputError(f"{data} has no class subfolders: the supervised baseline needs labels")
    mean, std = NORMALIZATIONS["imagenet"]
    return Source(images, np.arange(len(images)), None, None, mean, std, size, 0, AugmentSpec(),
                  seed)


class _Views(Dataset):
    """Item ``view * N + id`` -> one rendered view of image ``id``: stored parameters are read
    from the cache's memory map inside the worker (fresh ones sampled from ``(seed, view, id)``
    without a cache), so one set of workers serves every epoch."""

    def __init__(self, src: Source):
        self.src, self.n = src, len(src.images)

    def __len__(self) -> int:
        return self.n * max(1, self.src.views)

    def __getitem__(self, key: int):
        view, i = divmod(int(key), self.n)
        src = self.src
        params = None if src.cache is None else src.cache.read("params", [i], view=view)
        return render_views(src.images, i, [view], src.image_size, src.mean, src.std, src.spec,
                            src.seed, params)


class _EpochOrder(Sampler):
    """Epoch ``e``: view ``e mod K`` (``e`` itself without a cache) of every usable image, in a
    permutation seeded by ``(seed, e)``; set in the main process before each epoch."""

    def __init__(self, src: Source, seed: int):
        self.src, self.seed, self.epoch = src, seed, 0

    def view(self) -> int:
        return self.epoch % self.src.views if self.src.views else self.epoch

    def ids(self) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.src.ids[torch.randperm(len(self.src.ids), generator=g).numpy()]

    def __len__(self) -> int:
        return len(self.src.ids)

    def __iter__(self):
        return iter((self.view() * len(self.src.images) + self.ids()).tolist())


class Feed:
    """``(x, target)`` batches for every epoch of a run from one persistent DataLoader."""

    def __init__(self, src: Source, needs: str, batch_size: int, workers: int, seed: int,
                 pin: bool):
        self.src, self.needs, self.order = src, needs, _EpochOrder(src, seed)
        self.labels = np.asarray(src.images.labels)
        self.identity = src.cache is not None and all(src.cache.has(a) for a in IDENTITY)
        if src.cache is not None:
            src.cache.map_all("params")
        self.loader = DataLoader(_Views(src), batch_size=batch_size, sampler=self.order,
                                 num_workers=workers, collate_fn=collate,
                                 worker_init_fn=worker_init, pin_memory=pin,
                                 drop_last=len(src.ids) >= 2 * batch_size,
                                 persistent_workers=workers > 0)

    def epoch(self, e: int) -> EpochBatches:
        self.order.epoch = e
        return EpochBatches(self, self.order.view())


class EpochBatches:
    """One epoch of a :class:`Feed`; ``loader`` yields the raw rendered batches."""

    def __init__(self, feed: Feed, view: int):
        self.feed, self.view, self.loader = feed, view, feed.loader

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        src, v, needs = self.feed.src, self.view, self.feed.needs
        for ids, x, _, ok, reasons, fsize, fsha in self.loader:
            if not bool(ok.all()):
                bad = int(ids[~ok][0])
                raise ArtifactError(f"image {src.images.paths[bad]} can no longer be decoded "
                                    f"({reasons[int(np.flatnonzero(~ok.numpy())[0])]})")
            idn = ids.numpy()
            if self.feed.identity:  # the bytes the workers decoded are the extracted ones
                check_batch(src.images, idn, fsize.numpy(), fsha.numpy(),
                            src.cache.read("file_size", idn), src.cache.read("file_sha256", idn),
                            "the cache was extracted from")
            if needs == "targets":
                t = torch.from_numpy(src.targets.read("targets", idn, view=v))
            elif needs in ("features", "post", "logits"):
                t = torch.from_numpy(src.cache.read(needs, idn, view=v))
            elif needs == "labels":
                t = torch.from_numpy(self.feed.labels[idn]).long()
            else:
                t = torch.empty(0)
            yield x[:, 0], t
