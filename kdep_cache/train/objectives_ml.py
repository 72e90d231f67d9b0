"""``train-student --objective kdep-ml``: multi-layer feature KD (paper Table 7, "SVD+PTS+ML").

loss = loss_weight * MSE(pooled student feature, ``targets``)
     + sum over matched layers l of w_l * MSE(pool_G(student stage map)[..., :D_l], ``targets:l``)

where pool_G is the adaptive average pool to the targets' G x G grid (cells row-major, as
extract stores them) of the student stage's PRE-activation map, and D_l the layer target's
width (a student stage wider than its teacher layer is regressed on its first D_l channels).
Matching: the one fit-svd recorded (relative depth, or its --match); ``--match`` here may
pick a subset or other stages of at least D_l channels. ``--layer-weights`` W (every layer)
or ``L:W,...`` (default 1 each). The batches carry a :class:`MultiTarget` record.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F

from ..checks.multilayer import layer_weights as parse_weights
from ..checks.multilayer import match as parse_match
from ..errors import InputError
from ..models.taps import Taps, map_shapes, pool_map, stage_ends
from .objectives import Objective

NEEDS = "layer-targets"
PREFIX = "targets:"


class MultiTarget(NamedTuple):
    """One batch's targets: the pooled one and one (N, G*G, D_l) per teacher layer; moves
    like a tensor (``to``, ``pin_memory``, ``record_stream``) through the loop and prefetch."""

    pooled: torch.Tensor
    maps: dict

    def to(self, *a, **k) -> MultiTarget:
        return MultiTarget(self.pooled.to(*a, **k), {n: t.to(*a, **k) for n, t in self.maps.items()})

    def pin_memory(self) -> MultiTarget:
        return MultiTarget(self.pooled.pin_memory(), {n: t.pin_memory() for n, t in self.maps.items()})

    def record_stream(self, stream) -> None:
        for t in (self.pooled, *self.maps.values()):
            t.record_stream(stream)


def multi_target(store, ids: np.ndarray, view: int) -> MultiTarget:
    """The targets of ``ids`` (``view``): pooled + the layers this run reads (those its
    objective put in ``store.check_arrays``)."""
    layers = [a[len(PREFIX):] for a in store.check_arrays or () if a.startswith(PREFIX)]
    return MultiTarget(torch.from_numpy(store.read("targets", ids, view=view)),
                       {n: torch.from_numpy(store.read(PREFIX + n, ids, view=view))
                        for n in layers})


class KDEPML(Objective):
    needs = NEEDS

    def __init__(self, match: dict, dims: dict, weights: dict, grid: int, weight: float = 1.0):
        super().__init__(weight)
        self.match, self.dims, self.layer_weights, self.grid = match, dims, weights, grid

    def forward(self, out, target: MultiTarget):
        mse = F.mse_loss(out["pre"].float(), target.pooled.float())
        parts, loss = {"mse": mse}, self.weight * mse
        for layer, stage in self.match.items():
            s = pool_map(out["maps"][stage], self.grid)[..., : self.dims[layer]]
            part = F.mse_loss(s, target.maps[layer].float())
            parts[f"mse_{layer}"] = part
            loss = loss + self.layer_weights[layer] * part
        return {"loss": loss, **parts}

    @property
    def run_settings(self) -> dict:
        """What a resume must keep (train-student's settings)."""
        return {"ml": {"match": self.match, "layer_weights": self.layer_weights,
                       "grid": self.grid}}


def build(cfg, src, net) -> KDEPML:
    """The objective of ``cfg`` for student ``net`` on ``src``'s targets, checked before any
    training: targets with layers, known stages, stage maps at least G x G at the training
    size and at least D_l channels wide. Hooks the student's matched stages."""
    s = src.targets.manifest["settings"]
    recorded = s.get("layers") or {}
    if not recorded:
        raise InputError(f"--objective kdep-ml: targets {src.targets.dir} hold no layer "
                         "targets: extract with --layers, then fit-svd --student NAME")
    if cfg.compile:
        raise InputError("--compile is not supported with --objective kdep-ml (stage hooks)")
    grid, stages = int(s["grid"]), stage_ends(net)
    match = parse_match(cfg.match) or {t: r["stage"] for t, r in recorded.items()}
    for t, st in match.items():
        if t not in recorded:
            raise InputError(f"--match names layer {t!r}; the targets' layers: "
                             f"{', '.join(recorded)}")
        if st not in stages:
            raise InputError(f"--match names stage {st!r}; {cfg.student}'s stages: "
                             f"{', '.join(stages)}")
    shapes = map_shapes(net, sorted(set(match.values())), src.image_size, cfg.student)
    dims = {t: int(recorded[t]["dim"]) for t in match}
    for t, st in match.items():
        c, h, w = shapes[st]
        if min(h, w) < grid:
            raise InputError(f"{cfg.student} stage {st} is {h}x{w} at --image-size "
                             f"{src.image_size}, smaller than the targets' {grid}x{grid} grid: "
                             "use a larger --image-size or targets of a smaller --grid")
        if c < dims[t]:
            raise InputError(f"{cfg.student} stage {st} has {c} channels, fewer than the "
                             f"{dims[t]} of layer {t}'s targets: refit with fit-svd --match")
    weights = _weights(parse_weights(cfg.layer_weights), match)
    src.targets.check_arrays = ("targets", "valid", *(PREFIX + t for t in match))
    src.targets.check_all(src.targets.check_arrays)  # every array it reads, before any work
    Taps(net, sorted(set(match.values())), cfg.student)
    return KDEPML(match, dims, weights, grid, cfg.loss_weight)


def _weights(given, match: dict) -> dict:
    if given is None or isinstance(given, float):
        return {t: 1.0 if given is None else given for t in match}
    bad = [t for t in given if t not in match]
    if bad:
        raise InputError(f"--layer-weights names layer {bad[0]!r}; the matched layers: "
                         f"{', '.join(match)}")
    return {t: given.get(t, 1.0) for t in match}
