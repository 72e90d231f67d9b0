"""Upper bounds of option values, torch-free: values no run can mean (``--views 1e12``
allocates without end, ``--workers 1e12`` forks without end) are refused by
:mod:`kdep_cache.checks` before anything is written, so a refused run leaves ``--out`` as it
was.
"""

from __future__ import annotations

import os

from ..errors import InputError

MAX_VIEWS = 1000          # the paper's K is 1-4; Beyer et al. go to hundreds of epochs' views
MAX_IMAGE_SIZE = 4096     # px: far above any teacher's input (224-518)
MAX_EPOCHS = 100_000
MAX_BATCH = 2**20         # images per batch / per shard
MAX_DIM = 2**16           # feature width
MAX_WORLD_SIZE = 4096     # extracting processes
PTS_T_RANGE = (1e-6, 1e6)  # PTS temperature: paper 0.1; (|x| / T) ** (1 / n) overflows past
PTS_N_RANGE = (0.01, 100)  # PTS power: paper 3 (n < 1 expands, 1 / n huge overflows)
MAX_BATCH_GIB = 64        # one batch of float32 views (batch x K x 3 x S x S) above this: refused


def max_workers() -> int:
    """DataLoader workers: at most 4 per core this process may use (at least 8)."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(8, 4 * cores)


def in_range(key: str, v, lo: float, hi: float) -> float:
    """A number (already checked finite and > 0) within ``lo..hi``."""
    if not lo <= v <= hi:
        raise InputError(f"--{key.replace('_', '-')} must be in {lo:g}..{hi:g}, got {v:g}")
    return float(v)


def batch_memory(opts: dict) -> None:
    """One batch of views (batch x views x 3 x S x S float32) must fit a sane memory."""
    b, k, s = opts.get("batch_size"), opts.get("views"), opts.get("image_size")
    if b is None or k is None or s is None:
        return
    gib = b * k * 3 * s * s * 4 / 2**30
    if gib > MAX_BATCH_GIB:
        raise InputError(f"--batch-size {b} x --views {k} at --image-size {s} makes one batch of "
                         f"{gib:.0f} GiB of views (limit {MAX_BATCH_GIB}); lower --batch-size")
