"""Datasets that decode an image once and render stored / sampled views of it.

A view is made in two parts (see :mod:`kdep_cache.views.augment`): the CPU part here (decode, crop
box, resize, flip -> uint8) and the device part (:func:`kdep_cache.views.photometric.finish`), which
:class:`Collate` applies to the whole batch in the workers when the consumer is the CPU, or
the consumer applies on its device after the copy (CUDA).
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from ..checks import BACKGROUNDS, DEFAULT_BACKGROUND
from ..errors import InputError
from ..names import RENDER_DRAFT, RENDER_FULL, RENDER_GPU
from .augment import N_PARAMS, AugmentSpec, crop_resize, draft_factor, sample_params
from .files import openable
from .images import MAX_PIXELS, BadImage, ImageList, load_rgb
from .photometric import finish as finish_views
from .readers import NO_SHA, FolderReader, Ident


class ViewItem(NamedTuple):
    """One image's rendered views, as a dataset item (:func:`render_views`; the nvJPEG path's
    :func:`kdep_cache.views.nvjpeg.read_item` holds a :class:`~kdep_cache.views.nvjpeg.Jpeg` in
    ``views``)."""

    id: int
    views: torch.Tensor      # (K, 3, S, S): normalized float32, or uint8 still to finish
    params: torch.Tensor     # (K, P) float64
    ok: bool
    reason: str              # why not ``ok`` ("" when ok)
    ident: Ident             # the source file's size, sha256 (None: stat-matched), stat
    packed: object = None    # extract --pack: views.pack.Packed (bytes, name, kept) or None


class ViewBatch(NamedTuple):
    """A batch of :class:`ViewItem` (:class:`Collate`, ``gpu_decode.collate_bytes``)."""

    ids: torch.Tensor            # (n,) int64
    views: torch.Tensor | list   # (n, K, 3, S, S); a list of ``Jpeg`` for --decode gpu
    params: torch.Tensor         # (n, K, P) float64
    ok: torch.Tensor             # (n,) bool
    reasons: list
    file_size: torch.Tensor      # (n,) int64
    file_sha256: torch.Tensor    # (n, 32) uint8 (zeros where not ``hashed``)
    hashed: torch.Tensor         # (n,) bool: the worker computed the sha256 (else: stat matched)
    file_stat: torch.Tensor      # (n, 3) int64: (size, mtime_ns, inode) as read; -1 unknown
    packed: list                 # extract --pack: each image's Packed record (None without)


def batch_of(items, views) -> ViewBatch:
    """The :class:`ViewBatch` of ``items`` with ``views`` already stacked (or listed)."""
    sizes = np.array([it.ident.size for it in items], dtype=np.int64)
    shas = np.frombuffer(b"".join(it.ident.sha or NO_SHA for it in items),
                         dtype=np.uint8).reshape(len(items), -1)
    stats = [it.ident.stat or (-1, -1, -1) for it in items]
    return ViewBatch(torch.tensor([it.id for it in items]), views,
                     torch.stack([it.params for it in items]),
                     torch.tensor([it.ok for it in items]), [it.reason for it in items],
                     torch.from_numpy(sizes), torch.from_numpy(shas.copy()),
                     torch.tensor([it.ident.sha is not None for it in items]),
                     torch.tensor(stats, dtype=torch.int64).reshape(len(items), 3),
                     [it.packed for it in items])


class ViewDataset(Dataset):
    """Item ``j`` -> :class:`ViewItem` of image ``ids[j]``.

    ``params=None``: sample fresh parameters for ``views`` (view indices) from ``seed``;
    ``params`` given (N, K, P): replay the stored ones for ``views`` (K indices).
    """

    def __init__(self, images: ImageList, ids, views, size: int, mean, std,
                 spec: AugmentSpec | None = None, seed: int = 0, params: np.ndarray | None = None,
                 finish: bool = True, reader=None):
        self.images, self.ids = images, np.asarray(ids, dtype=np.int64)
        self.views, self.size, self.mean, self.std = list(views), size, mean, std
        self.spec, self.seed, self.params, self.finish = spec, seed, params, finish
        self.reader = reader

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int):
        p = None if self.params is None else self.params[j]
        return render_views(self.images, int(self.ids[j]), self.views, self.size, self.mean,
                            self.std, self.spec, self.seed, p, self.finish, self.reader)


def render_views(images: ImageList, i: int, views, size: int, mean, std,
                 spec: AugmentSpec | None, seed: int, params: np.ndarray | None = None,
                 finish: bool = True, reader=None):
    """Image ``i`` decoded once (once per JPEG draft factor), rendered at each of ``views``:
    stored ``params`` (K, P) replayed, or sampled from ``(seed, view, i)``.
    -> :class:`ViewItem`: views (K,3,S,S) normalized float32 when
    ``finish``, else uint8 (the device part still to apply); ``ident`` = the source file's
    content identity. ``reader`` (:mod:`kdep_cache.views.readers`) says where the bytes come
    from: the file by default (read once: hashed and decoded from memory), or a pack."""
    k = len(views)
    read = (reader or FolderReader(images))(i)
    bg = spec.background if spec is not None else BACKGROUNDS[DEFAULT_BACKGROUND]
    method = spec.render if spec is not None else RENDER_FULL
    try:
        if read.src is None:
            raise BadImage(read.why)
        ps, x = _render_u8(read.src, bg, method, views, size, spec, seed, i, params)
    except BadImage as e:
        x = torch.zeros(k, 3, size, size, dtype=torch.float32 if finish else torch.uint8)
        return ViewItem(i, x, torch.zeros(k, N_PARAMS, dtype=torch.float64), False, str(e),
                        read.ident)
    if finish:
        x = finish_views(x, ps, mean, std)
    return ViewItem(i, x, torch.from_numpy(ps), True, "", read.ident, read.packed)


def _render_u8(path, bg, method, views, size, spec, seed, i, params):
    """-> (params (K, P) float64, uint8 views (K, 3, S, S)) by the recorded render method."""
    if method == RENDER_GPU:
        from .nvjpeg import GPU_CACHE_ON_CPU
        raise InputError(GPU_CACHE_ON_CPU)
    decoded: dict = {}  # draft factor asked -> (image, factor it really has)
    if params is None:
        size_hw = _jpeg_size(path) if method == RENDER_DRAFT else None
        if size_hw is None:  # not a JPEG (or full decode): decode once, at full size
            img = load_rgb(path, bg)
            decoded = {r: (img, 1) for r in (1, 2, 4, 8)}
            size_hw = img.size[1], img.size[0]
        ps = np.stack([sample_params(spec, seed, v, i, *size_hw) for v in views])
    else:
        ps = np.asarray(params, dtype=np.float64).reshape(len(views), -1)
    xs = []
    for p in ps:
        r = draft_factor(p, size) if method == RENDER_DRAFT else 1
        if r not in decoded:
            img = load_rgb(path, bg, draft=r)
            full = img.size == (int(p[5]), int(p[4]))
            decoded[r] = (img, 1 if full else r)
            if full and r > 1:  # not a JPEG: every factor decodes to this same image
                decoded.update({q: (img, 1) for q in (1, 2, 4, 8)})
        img, got = decoded[r]
        xs.append(crop_resize(img, p, size, got))
    return ps, torch.stack(xs)


def _jpeg_size(path: Path) -> tuple[int, int] | None:
    """(height, width) of a JPEG after EXIF orientation, from its header; None for other
    formats or anything odd (then :func:`load_rgb` decodes in full and gives the reason)."""
    head = jpeg_header(path)
    return None if head is None else (head[0], head[1])


def jpeg_header(path: Path) -> tuple[int, int, int] | None:
    """(height, width) after EXIF orientation and the orientation tag (1..8; 1 = none) of a
    JPEG, from its header; None for other formats or anything odd."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            with Image.open(openable(path)) as im:
                w, h = im.size
                if im.format != "JPEG" or w * h > MAX_PIXELS or min(w, h) < 1:
                    return None
                orientation = im.getexif().get(0x0112, 1)
                orientation = orientation if orientation in range(1, 9) else 1
                return (w, h, orientation) if orientation >= 5 else (h, w, orientation)
    except Exception:  # noqa: BLE001 - load_rgb reports what is wrong with the file
        return None


class Collate:
    """:class:`ViewItem` s -> a :class:`ViewBatch`; with ``finish=(mean, std)`` the device
    part is applied here to the whole batch (on the CPU, in the worker), else the views stay
    uint8 for the consumer's device."""

    def __init__(self, finish: tuple | None = None):
        self.finish = finish

    def __call__(self, items) -> ViewBatch:
        b = batch_of(items, torch.stack([it.views for it in items]))
        x = b.views
        if self.finish is not None and x.dtype == torch.uint8:
            n, k = x.shape[:2]
            x = finish_views(x.flatten(0, 1), b.params.flatten(0, 1), *self.finish).view(
                n, k, *x.shape[2:])
            b = b._replace(views=x)
        return b


collate = Collate()  # views as the dataset made them


def worker_init(_):
    torch.set_num_threads(1)
