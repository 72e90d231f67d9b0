"""Images are identified by content, not by path.

``extract`` records each image's file size and sha256 (computed in the workers from the file's
bytes, read just before the decode, which re-reads them from the page cache) in every raw shard (``file_size`` (n,), ``file_sha256`` (n, 32)) and, when the
cache completes, in ``images.json``. Readers compare:

- ``extract`` resuming: every finished image's size (one ``stat`` each) and the sha256 of a
  seeded sample per finished shard, so a folder with the same names but other pixels is
  refused before any new shard mixes two image sets;
- ``train-student``: every image's size at start (``--data`` relocation included), and
  every image's sha256 as the workers read it, each epoch.
"""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np

from ..errors import LineageError
from ..storage.digest import file_identity
from ..storage.fsio import read_json, write_json
from ..views.images import ImageList
from .manifest import IMAGES
from .schema import shard_name
from .store import read_shard_attrs

ARRAYS = ("file_size", "file_sha256")
SAMPLE_PER_SHARD = 16  # sha256 checks per finished shard when extract resumes


def _refuse(bad: list[str], checked: int, root: str, what: str) -> None:
    if bad:
        raise LineageError(f"{len(bad)} of the {checked} images checked under {root} differ "
                           f"from the ones {what} (e.g. {', '.join(bad[:3])}): same names, other "
                           "content; point --data at the original images, or extract anew into "
                           "a new --out")


def check_sizes(images: ImageList, ids: np.ndarray, sizes: np.ndarray, what: str) -> None:
    """Refuse if any readable recorded image now has another size (``stat`` only)."""
    bad = []
    for i, size in zip(ids.tolist(), sizes.tolist()):
        if size < 0:
            continue  # unreadable at extraction: it was skipped then
        try:
            now = os.stat(os.path.join(images.root, images.paths[i])).st_size
        except OSError:
            now = -1
        if now != size:
            bad.append(images.paths[i])
    _refuse(bad, len(ids), images.root, what)


def check_batch(images: ImageList, ids: np.ndarray, sizes: np.ndarray, shas: np.ndarray,
                want_sizes: np.ndarray, want_shas: np.ndarray, what: str) -> None:
    """Refuse a batch whose files' bytes are not the recorded ones."""
    bad = [images.paths[i] for i, s, h, ws, wh in zip(ids.tolist(), sizes, shas, want_sizes,
                                                      want_shas)
           if ws >= 0 and (s != ws or not np.array_equal(h, wh))]
    _refuse(bad, len(ids), images.root, what)


def check_finished_shards(out: Path, images: ImageList, shards: list[int], seed: int) -> None:
    """``extract`` resume: the images of finished shards must still be the same files."""
    rng = np.random.default_rng([seed, 7])
    bad, checked = [], 0
    for s in shards:
        start = read_shard_attrs(out / shard_name(s))["start"]
        with h5py.File(out / shard_name(s), "r") as f:
            if "file_size" not in f:
                return  # a cache started before content identity: nothing to compare
            sizes, shas = f["file_size"][()], f["file_sha256"][()]
        ids = np.arange(start, start + len(sizes))
        check_sizes(images, ids, sizes, "this cache was started with")
        readable = np.flatnonzero(sizes >= 0)
        for j in rng.choice(readable, size=min(SAMPLE_PER_SHARD, len(readable)), replace=False):
            size, sha = file_identity(os.path.join(images.root, images.paths[ids[j]]))
            checked += 1
            if size != sizes[j] or sha != shas[j].tobytes():
                bad.append(images.paths[ids[j]])
    _refuse(bad, checked, images.root, "this cache was started with")


def record_in_images_json(out: Path, n_shards: int) -> None:
    """Write every image's size and sha256 (hex) into ``images.json`` (cache complete)."""
    sizes, shas = [], []
    for s in range(n_shards):
        with h5py.File(out / shard_name(s), "r") as f:
            sizes.append(f["file_size"][()])
            shas.append(f["file_sha256"][()])
    d = read_json(out / IMAGES)
    d["sizes"] = np.concatenate(sizes).tolist()
    d["sha256"] = [h.tobytes().hex() for h in np.concatenate(shas)]
    write_json(out / IMAGES, d)
