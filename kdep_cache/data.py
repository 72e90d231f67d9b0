"""Datasets that decode an image once and render stored / sampled views of it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import N_PARAMS, AugmentSpec, normalize, render, sample_params
from .digest import file_identity
from .images import BadImage, ImageList, load_rgb


class ViewDataset(Dataset):
    """Item ``j`` -> (image id, views (K,3,S,S) normalized, params (K,P), ok, reason,
    (file size, file sha256)).

    ``params=None``: sample fresh parameters for ``views`` (view indices) from ``seed``;
    ``params`` given (N, K, P): replay the stored ones for ``views`` (K indices).
    """

    def __init__(self, images: ImageList, ids, views, size: int, mean, std,
                 spec: AugmentSpec | None = None, seed: int = 0, params: np.ndarray | None = None):
        self.images, self.ids = images, np.asarray(ids, dtype=np.int64)
        self.views, self.size, self.mean, self.std = list(views), size, mean, std
        self.spec, self.seed, self.params = spec, seed, params

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int):
        p = None if self.params is None else self.params[j]
        return render_views(self.images, int(self.ids[j]), self.views, self.size, self.mean,
                            self.std, self.spec, self.seed, p)


def render_views(images: ImageList, i: int, views, size: int, mean, std,
                 spec: AugmentSpec | None, seed: int, params: np.ndarray | None = None):
    """Image ``i`` decoded once, rendered at each of ``views``: stored ``params`` (K, P)
    replayed, or sampled from ``(seed, view, i)``. -> (i, views, params, ok, reason, ident)
    where ``ident`` = (size, sha256) of the file's bytes (the image's content identity)."""
    k = len(views)
    path = Path(images.root) / images.paths[i]
    ident = file_identity(path)  # the bytes decoded next, served again by the page cache
    try:
        img = load_rgb(path) if spec is None else load_rgb(path, spec.background)
    except BadImage as e:
        return (i, torch.zeros(k, 3, size, size), torch.zeros(k, N_PARAMS, dtype=torch.float64),
                False, str(e), ident)
    w, h = img.size
    xs, ps = [], []
    for n, v in enumerate(views):
        p = params[n] if params is not None else sample_params(spec, seed, v, i, h, w)
        xs.append(normalize(render(img, p, size), mean, std))
        ps.append(torch.from_numpy(np.asarray(p, dtype=np.float64)))
    return i, torch.stack(xs), torch.stack(ps), True, "", ident


def collate(batch):
    """-> ids, views, params, ok, reasons, file sizes (n,) int64, file sha256 (n, 32) uint8."""
    ids, xs, ps, ok, reasons, idents = zip(*batch)
    sizes = np.array([s for s, _ in idents], dtype=np.int64)
    shas = np.frombuffer(b"".join(h for _, h in idents), dtype=np.uint8).reshape(len(ids), -1)
    return (torch.tensor(ids), torch.stack(xs), torch.stack(ps), torch.tensor(ok),
            list(reasons), torch.from_numpy(sizes), torch.from_numpy(shas.copy()))


def worker_init(_):
    torch.set_num_threads(1)
