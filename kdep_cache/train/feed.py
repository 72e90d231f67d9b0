"""Batches for every epoch of a student run, from one persistent DataLoader.

Epoch ``e`` uses view ``e mod K`` of every usable image (``e`` itself without a cache), in a
permutation seeded by ``(seed, e)``, cut into global batches of ``--batch-size``. Under
torch.distributed each rank takes its slice of every global batch (``np.array_split``), so
the ranks together see exactly the one-process epoch, batch by batch; a rank's loss is
weighted by its share of the batch so that averaged gradients equal the global-batch mean.
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from ..data import collate, render_views, worker_init
from ..errors import ArtifactError
from ..identity import ARRAYS as IDENTITY
from ..identity import check_batch
from .sources import Source


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
    """A batch sampler: this rank's slice of each global batch of epoch ``epoch`` (set in the
    main process before each epoch; the workers only render what it yields)."""

    def __init__(self, src: Source, seed: int, batch_size: int, rank: int = 0, world: int = 1):
        self.src, self.seed, self.epoch = src, seed, 0
        self.batch, self.rank, self.world = batch_size, rank, world

    def view(self) -> int:
        return self.epoch % self.src.views if self.src.views else self.epoch

    def ids(self) -> np.ndarray:
        g = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        return self.src.ids[torch.randperm(len(self.src.ids), generator=g).numpy()]

    def global_batches(self) -> list[np.ndarray]:
        keys = self.view() * len(self.src.images) + self.ids()
        b = self.batch
        cut = len(keys) // b * b if len(keys) >= 2 * b else len(keys)  # drop a short last
        out = [keys[i:i + b] for i in range(0, cut, b)]                # batch if >= 2 full
        return [x for x in out if len(x) >= self.world]  # every rank gets at least one

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self):
        for keys in self.global_batches():
            yield np.array_split(keys, self.world)[self.rank].tolist()


class Feed:
    """``(x, target, weight)`` batches for every epoch of a run from one persistent
    DataLoader; ``weight`` = this rank's share of the global batch x world size (1.0 in one
    process)."""

    def __init__(self, src: Source, needs: str, batch_size: int, workers: int, seed: int,
                 pin: bool, rank: int = 0, world: int = 1):
        self.src, self.needs = src, needs
        self.order = _EpochOrder(src, seed, batch_size, rank, world)
        self.labels = np.asarray(src.images.labels)
        self.identity = src.cache is not None and all(src.cache.has(a) for a in IDENTITY)
        if src.cache is not None:
            src.cache.map_all("params")
        self.loader = DataLoader(_Views(src), batch_sampler=self.order, num_workers=workers,
                                 collate_fn=collate, worker_init_fn=worker_init,
                                 pin_memory=pin, persistent_workers=workers > 0)

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
        src, v, needs, order = self.feed.src, self.view, self.feed.needs, self.feed.order
        sizes = [len(b) for b in order.global_batches()]
        for n_global, (ids, x, _, ok, reasons, fsize, fsha) in zip(sizes, self.loader):
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
            yield x[:, 0], t, len(idn) * order.world / n_global
