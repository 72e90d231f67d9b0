"""The CUDA half of the feed: pinned uint8 batches (or JPEG bytes) copied non-blocking and
finished on a side stream, one batch ahead of the step that consumes it."""

from __future__ import annotations

import torch

from .step import TrainBatch


def prefetch(batches, device: torch.device, finish_fn):
    """:class:`TrainBatch` es of uint8 views (or JPEG bytes) + their ``params`` -> finished
    :class:`TrainBatch` es on ``device``:
    copied (non-blocking, from pinned memory) and finished by ``finish_fn(x, params)`` on a side
    CUDA stream, one batch ahead of the step that consumes it."""
    stream, main = torch.cuda.Stream(device), torch.cuda.current_stream(device)

    def ready(b: TrainBatch) -> TrainBatch:
        with torch.cuda.stream(stream):
            x = finish_fn(b.x, b.params)
            t = b.target.pin_memory().to(device, non_blocking=True)  # from the cache: pageable
        return TrainBatch(x, t, b.weight)

    it = iter(batches)
    nxt = next(it, None)
    nxt = ready(nxt) if nxt is not None else None
    while nxt is not None:
        main.wait_stream(stream)
        cur = nxt
        for a in (cur.x, cur.target):
            a.record_stream(main)  # allocated on the side stream, used on the main one
        b = next(it, None)
        nxt = ready(b) if b is not None else None
        yield cur
