"""The epoch order of a student run, as a batch sampler: epoch ``e`` uses view ``e mod K``, in a
permutation seeded by ``(seed, e)``, cut into global batches; each rank yields its slice."""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from ..runtime.dist import global_batches, rank_slice
from .sources import Source


class EpochOrder(Sampler):
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
        # a short last batch is dropped once there are two full ones
        return global_batches(keys, self.batch, self.world, len(keys) >= 2 * self.batch)

    def __len__(self) -> int:
        return len(self.global_batches())

    def __iter__(self):
        for keys in self.global_batches():
            yield rank_slice(keys, self.rank, self.world)
