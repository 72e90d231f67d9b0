"""Batches for every epoch of a student run, from one persistent DataLoader.

Epoch ``e`` uses view ``e mod K`` of every usable image (``e`` itself without a cache), in a
permutation seeded by ``(seed, e)``, cut into global batches of ``--batch-size``. Under
torch.distributed each rank takes its slice of every global batch (``np.array_split``), so
the ranks together see exactly the one-process epoch, batch by batch; a rank's loss is
weighted by its share of the batch so that averaged gradients equal the global-batch mean.

The workers do the CPU part of replay (decode, crop, resize, flip -> uint8). The device part
(jitter, lighting, normalization) runs in the workers on the whole batch when the student
trains on the CPU; on CUDA the uint8 batch is pinned, copied non-blocking and finished on the
GPU, one batch ahead on a side stream (:func:`.prefetch.prefetch`). The dataset is
:mod:`.dataset`, the epoch order :mod:`.order`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch.utils.data import DataLoader

from ..cache.identity import ARRAYS as IDENTITY
from ..cache.identity import check_batch
from ..cache.schema import PACK, PACK_OFFSETS
from ..errors import ArtifactError
from ..names import RENDER_GPU
from ..views.datasets import Collate, collate, worker_init
from ..views.nvjpeg import collate_bytes, render_batch
from ..views.photometric import finish
from ..views.readers import shared_known
from .dataset import RunViews
from .objectives_ml import NEEDS as MULTI
from .objectives_ml import multi_target
from .order import EpochOrder
from .prefetch import prefetch
from .sources import Source
from .step import TrainBatch


class Feed:
    """:class:`TrainBatch` es for every epoch of a run from one persistent DataLoader;
    ``weight`` = this rank's share of the global batch x world size (1.0 in one process)."""

    def __init__(self, src: Source, needs: str, batch_size: int, workers: int | None, seed: int,
                 pin: bool, rank: int = 0, world: int = 1, device=None):
        self.src, self.needs = src, needs
        self.device = torch.device(device or ("cuda" if pin else "cpu"))
        on_cpu, gpu = self.device.type == "cpu", src.spec.render == RENDER_GPU
        workers = default_workers(self.device, world) if workers is None else workers
        self.order = EpochOrder(src, seed, batch_size, rank, world)
        self.labels = np.asarray(src.images.labels)
        packed = src.cache is not None and src.cache.packed
        self.identity = (src.cache is not None and not packed
                         and all(src.cache.has(a) for a in IDENTITY))
        # the files' stats after their sha256 was checked once (shared with the workers)
        self.known = shared_known(len(src.images)) if self.identity else None
        if src.cache is not None:
            for name in ("params", *((PACK, PACK_OFFSETS) if packed else ())):
                src.cache.map_all(name)  # before the workers fork: they share the maps
        self.loader = DataLoader(RunViews(src, self.known), batch_sampler=self.order,
                                 num_workers=workers,
                                 collate_fn=collate_bytes if gpu else
                                 Collate((src.mean, src.std)) if on_cpu else collate,
                                 worker_init_fn=worker_init, pin_memory=pin and not on_cpu,
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
        dev = self.feed.device
        if dev.type != "cuda":
            yield from self._batches()
            return
        src = self.feed.src
        if src.spec.render == RENDER_GPU:
            def make(x, p):
                r = render_batch(x, p[:, None], src.image_size, dev)
                for n, why in r.bad.items():  # as the CPU replay does
                    raise ArtifactError(f"image {x[n].name} can no longer be decoded ({why})")
                return r.views[:, 0]
        else:
            def make(x, p):
                return x.to(dev, non_blocking=True)
        yield from prefetch(self._batches(), dev,
                            lambda x, p: finish(make(x, p), p, src.mean, src.std))

    def _batches(self):
        src, v, needs, order = self.feed.src, self.view, self.feed.needs, self.feed.order
        sizes = [len(b) for b in order.global_batches()]
        for n_global, b in zip(sizes, self.loader):
            ids, ok = b.ids, b.ok
            if not bool(ok.all()):
                bad = int(ids[~ok][0])
                raise ArtifactError(f"image {src.images.paths[bad]} can no longer be decoded "
                                    f"({b.reasons[int(np.flatnonzero(~ok.numpy())[0])]})")
            idn = ids.numpy()
            if self.feed.identity:  # the bytes the workers decoded are the extracted ones
                self._check_identity(b, idn)
            if needs == "targets":
                t = torch.from_numpy(src.targets.read("targets", idn, view=v))
            elif needs == MULTI:  # kdep-ml: a MultiTarget record (pooled + per layer)
                t = multi_target(src.targets, idn, v)
            elif needs in ("features", "post", "logits"):
                t = torch.from_numpy(src.cache.read(needs, idn, view=v))
            elif needs == "labels":
                t = torch.from_numpy(self.feed.labels[idn]).long()
            else:
                t = torch.empty(0)
            w = len(idn) * order.world / n_global
            x = b.views
            if isinstance(x, list):  # file bytes (--decode gpu)
                yield TrainBatch(x, t, w, b.params[:, 0])
            else:  # uint8 views still need the device part (its parameters come along)
                yield TrainBatch(x[:, 0], t, w, b.params[:, 0] if x.dtype == torch.uint8
                                 else None)


    def _check_identity(self, b, idn) -> None:
        """Each file's sha256 once (the rows the workers hashed), then its stat, recorded in
        ``known``, stands for it; a stat that changes makes the worker hash it again."""
        src, h = self.feed.src, b.hashed.numpy()
        if h.any():
            ids = idn[h]
            check_batch(src.images, ids, b.file_size.numpy()[h], b.file_sha256.numpy()[h],
                        src.cache.read("file_size", ids), src.cache.read("file_sha256", ids),
                        "the cache was extracted from")
            self.feed.known[torch.from_numpy(ids)] = b.file_stat[torch.from_numpy(h)]


def default_workers(device: torch.device, local_ranks: int = 1) -> int:
    """Loader workers when --workers is not given: 2 on the CPU (the student's own threads
    need the cores); on CUDA the cores this process may use / local ranks, less one for the
    main process, at most 16."""
    if device.type != "cuda":
        return 2
    n = int(os.environ.get("LOCAL_WORLD_SIZE", local_ranks))
    return max(1, min(16, len(os.sched_getaffinity(0)) // max(1, n) - 1))
