"""The one dataset of a student run: item ``view * N + id`` -> one rendered view of image ``id``."""

from __future__ import annotations

from torch.utils.data import Dataset

from ..names import RENDER_GPU
from ..views.datasets import render_views
from ..views.nvjpeg import read_item
from ..views.readers import FolderReader, PackReader
from .sources import Source


class RunViews(Dataset):
    """Item ``view * N + id`` -> one rendered view of image ``id``: stored parameters are read
    from the cache's memory map inside the worker (fresh ones sampled from ``(seed, view, id)``
    without a cache), so one set of workers serves every epoch."""

    def __init__(self, src: Source, known=None):
        self.src, self.n = src, len(src.images)
        packed = src.cache is not None and src.cache.packed
        # a packed cache: the pack's bytes; else each file read once per use, hashed until the
        # feed has checked it (``known``: the stats it recorded), stat-compared after
        self.reader = PackReader(src.images, src.cache) if packed else FolderReader(src.images,
                                                                                    known)

    def __len__(self) -> int:
        return self.n * max(1, self.src.views)

    def __getitem__(self, key: int):
        view, i = divmod(int(key), self.n)
        src = self.src
        params = None if src.cache is None else src.cache.read("params", [i], view=view)
        if src.spec.render == RENDER_GPU:  # the file's bytes, for nvJPEG in the main process
            return read_item(src.images, i, [view], src.spec, src.seed, params, self.reader)
        return render_views(src.images, i, [view], src.image_size, src.mean, src.std, src.spec,
                            src.seed, params, finish=False, reader=self.reader)
