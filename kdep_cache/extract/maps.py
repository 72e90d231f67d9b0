"""``extract --layers L1,L2 --grid G`` (multi-layer KD, issue 27): per named teacher stage, its
pre-activation map of every cached view, adaptive-average-pooled to G x G, stored in each
shard as ``map:<layer>`` with shape (K, n, G*G, C) in the cache's dtype (cells row-major).

A view's map is the teacher's map of the very tensor it saw (a flipped view: of the flipped
image). The layer names and the grid are checked against the teacher at the extraction size
before anything is written, and recorded in the cache settings (``layers``, ``grid``): a
resume with other layers is refused as with any other setting. Cost: G*G*C*itemsize bytes
per view and layer (README "Multi-layer KD" has the table).
"""

from __future__ import annotations

import numpy as np
import torch

from ..errors import InputError
from ..models.taps import Taps, depths, map_shapes, pool_map, tap_names

PREFIX = "map:"


def array_name(layer: str) -> str:
    return f"{PREFIX}{layer}"


def layers_of(settings: dict) -> list[str]:
    """The layers a cache's settings record ([] for a cache extracted without --layers)."""
    return list(settings.get("layers") or [])


def attach(cfg, teacher, tinfo) -> Taps | None:
    """Check ``cfg.layers`` / ``cfg.grid`` against ``teacher`` at ``cfg.image_size`` (one probe
    forward) and hook it; None without --layers."""
    if not cfg.layers:
        return None
    what = f"teacher {tinfo.name}"
    shapes = map_shapes(teacher, cfg.layers, cfg.image_size, what)
    for name, (_, h, w) in shapes.items():
        if cfg.grid > min(h, w):
            raise InputError(f"--grid {cfg.grid} is larger than {name}'s {h}x{w} map at "
                             f"--image-size {cfg.image_size}: use --grid {min(h, w)} or less, "
                             "or a larger --image-size")
    return Taps(teacher, cfg.layers, what)


def settings(cfg, teacher) -> dict:
    """What --layers adds to the cache settings (nothing without it: older caches resume):
    the layers, the grid and each layer's relative depth in the teacher (for matching)."""
    if not cfg.layers:
        return {}
    return {"layers": list(cfg.layers), "grid": cfg.grid,
            "layer_depths": depths(cfg.layers, tap_names(teacher))}


def names(cfg) -> list[str]:
    return [array_name(n) for n in cfg.layers or ()]


def pooled(out: dict, grid: int) -> dict:
    """``{"map:<layer>": (N, G*G, C)}`` from a teacher output's ``maps`` (none: {})."""
    return {array_name(n): pool_map(m, grid) for n, m in (out.get("maps") or {}).items()}


class MapArrays:
    """The (K, n, G*G, C) arrays of one shard, filled batch by batch."""

    def __init__(self, cfg, n: int, dtype):
        self.k, self.n, self.dtype, self.names = cfg.views, n, dtype, names(cfg)
        self.arrays: dict[str, np.ndarray] = {}

    def fill(self, outs: dict, local: np.ndarray, good: np.ndarray) -> None:
        b = len(local)
        for name in self.names:
            v = outs[name]  # (b*K, G*G, C), image-major as the views were stacked
            v = v.reshape(b, self.k, *v.shape[1:]).transpose(0, 1).cpu().numpy()
            if name not in self.arrays:
                self.arrays[name] = np.zeros((self.k, self.n, *v.shape[2:]), dtype=self.dtype)
            self.arrays[name][:, local] = np.where(good[None, :, None, None], v, 0)

    def checked(self, valid: np.ndarray, lo: int, hi: int) -> dict:
        for name, a in self.arrays.items():
            if not np.all(np.isfinite(a[:, valid.astype(bool)])):
                raise InputError(f"teacher produced non-finite {name} maps in images {lo}..{hi}:"
                                 " check the weights and --precision")
        return self.arrays


def keep(tensors: dict, o: dict, grid: int, upto: int) -> None:
    """Append this chunk's pooled maps (its first ``upto`` rows) to ``tensors``."""
    for k, v in pooled(o, grid).items():
        tensors.setdefault(k, []).append(v[:upto])


def joined(tensors: dict) -> dict:
    return {k: torch.cat(v) for k, v in tensors.items()}
