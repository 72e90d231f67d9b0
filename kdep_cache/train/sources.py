"""Where a student run gets its images, stored views and per-batch targets from."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..cache.identity import ARRAYS as IDENTITY
from ..cache.identity import check_sizes
from ..cache.manifest import IMAGES
from ..cache.schema import PACK, PACK_OFFSETS, RAW, TARGETS
from ..cache.sidecar import read_image_list
from ..cache.store import Store
from ..errors import InputError, LineageError
from ..models.registry import NORMALIZATIONS, normalization
from ..views.augment import AugmentSpec
from ..views.images import ImageList, scan_images

log = logging.getLogger(__name__)


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
    epochs_started: int = 0

    def checked_epochs(self, epoch_fn):
        """``epoch_fn`` that first checks again every array this run reads (the memory maps
        read the files as they are now: a change in place since the start is refused as the
        next epoch starts; the first epoch uses the check made at start)."""
        def epoch(e):
            if self.epochs_started:
                for store in (self.cache, self.targets):
                    if store is not None:
                        store.recheck()
            self.epochs_started += 1
            return epoch_fn(e)
        return epoch

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
    if needs in ("targets", "teacher", "layer-targets") and tstore is None:
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
    images = read_image_list(cstore.dir, cstore.manifest["settings"],  # as fingerprinted
                             root=str(Path(data).resolve()) if data else None)
    packed = cstore.packed  # the images are in the cache: the folder is never read
    if data is not None and packed:
        log.warning("--data %s is not read: the cache holds its images (extract --pack %s)",
                    data, cstore.manifest["settings"].get("pack"))
    elif data is not None:
        _check_images_present(images)
    # every array this run reads is the one the manifest lists, before any work (only those:
    # the teacher features of a big cache are not read by a kdep student)
    cstore.check_arrays = tuple({"params", "valid", *IDENTITY,
                                 *([needs] if needs in ("features", "post", "logits") else []),
                                 *((PACK, PACK_OFFSETS) if packed else ())})
    cstore.check_all(cstore.check_arrays)
    if tstore is not None:
        tstore.check_arrays = ("targets", "valid")
        tstore.check_all(tstore.check_arrays)
    valid = np.concatenate([v for _, _, v in cstore.iter_shards("valid")]).astype(bool)
    if all(cstore.has(a) for a in IDENTITY) and not packed:
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
