"""fit-svd for the cached stage maps (multi-layer KD, issue 27).

Per cached teacher layer: one streaming PCA (the mergeable :class:`~.moments.Moments` of the
pooled fit) over the channel vectors of every grid cell of the fitted views of every valid
image, i.e. of the stacked (rows * cells, C) matrix; projected to the width of the matched
student stage (at most C: a wider stage is regressed on its first C channels) with the pooled
target's transform (PTS / SN / SM / none, ``--pts-t``, ``--pts-n``, ``--null``). The aligner
is always SVD. Targets ``targets:<layer>`` (K, n, G*G, D_l) sit next to ``targets`` in every
shard, and each layer's projection in ``projection-<layer>.h5``. The matching (relative
depth, or ``--match``) and the widths are recorded in the settings: one raw cache serves any
student, as for the pooled target.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..cache.store import Store
from ..checks.multilayer import match as parse_match
from ..errors import ArtifactError
from ..storage.digest import array_sha
from ..storage.fsio import fingerprint
from .align import AlignSpec, Projection, fit_projection
from .moments import Moments
from .projection import write_projection

log = logging.getLogger(__name__)
TARGET_PREFIX = "targets:"


def target_name(layer: str) -> str:
    return f"{TARGET_PREFIX}{layer}"


def projection_file(layer: str) -> str:
    return f"projection-{layer}.h5"


def plan(cache: Store, student: str | None, match: str | None) -> dict:
    """``{layer: {"stage", "dim", "teacher_dim"}}`` for the layers the cache holds ({} for a
    cache without --layers, or without --student: then nothing says the stage widths)."""
    s = cache.manifest["settings"]
    layers = list(s.get("layers") or [])
    if not layers:
        return {}
    if student is None:
        log.warning("the cache holds maps of %s, but --dim names no student stages: no layer "
                    "targets are fitted (give --student NAME)", ", ".join(layers))
        return {}
    from ..models import FeatureNet, build_student
    from ..models.taps import map_shapes, match_by_depth, stage_ends
    net = FeatureNet(build_student(student, num_classes=1))
    stages = stage_ends(net)
    widths = {k: v[0] for k, v in map_shapes(net, stages, 64, "the student").items()}
    matched = match_by_depth(s["layer_depths"], stages, parse_match(match))
    c = {n: int(cache.read(f"map:{n}", np.arange(1), view=0).shape[-1]) for n in matched}
    return {t: {"stage": st, "dim": min(widths[st], c[t]), "teacher_dim": c[t]}
            for t, st in matched.items()}


def fit_layers(cache: Store, layer_plan: dict, spec: AlignSpec, views: list[int]
               ) -> dict[str, tuple[Projection, Moments]]:
    """Each planned layer's projection and the moments it was fitted from (one pass each)."""
    out = {}
    for layer, p in layer_plan.items():
        m = Moments.empty(p["teacher_dim"])
        for v in views:
            for lo, hi, valid in cache.iter_shards("valid"):
                x = np.asarray(cache.read(f"map:{layer}", np.arange(lo, hi), view=v))
                x = x[valid.astype(bool)].reshape(-1, p["teacher_dim"])
                if not np.all(np.isfinite(x)):
                    raise ArtifactError(f"{cache.dir}: non-finite {layer} maps in images "
                                        f"{lo}..{hi} (view {v})")
                m = m.update(x.astype(np.float64))
        out[layer] = (fit_projection(replace(spec, dim=p["dim"], aligner="svd"), m), m)
    return out


def write_layer_projections(out: Path, fitted: dict, cache: Store, views) -> dict:
    """``projection-<layer>.h5`` of each layer; returns the manifest's per-layer record."""
    rec = {}
    for layer, (proj, m) in fitted.items():
        fp = fingerprint({"spec": proj.spec.to_json(), "cache": cache.fingerprint,
                          "fit_views": views, "n": m.n,  # projection.h5's recipe
                          "arrays": {k: array_sha(v) for k, v in proj.arrays().items()}})
        expl = float(np.sum(proj.aligned_std(m.cov) ** 2) / max(np.trace(m.cov), 1e-300))
        write_projection(out / projection_file(layer), proj, fp, cache, views, m.n, expl)
        rec[layer] = {"projection": fp, "explained_variance": expl, "fitted_rows": m.n,
                      "null_dims": proj.null_dims}
    return rec


def layer_targets(cache: Store, fitted: dict, lo: int, hi: int, ok: np.ndarray, dt,
                  dtype: str) -> dict[str, np.ndarray]:
    """``{"targets:<layer>": (K, n, G*G, D_l)}`` of images ``lo..hi`` (invalid rows 0)."""
    from .run import NonFiniteTargets
    arrays = {}
    for layer, (proj, _) in fitted.items():
        tgt = None
        for v in range(cache.views):
            t = proj.apply(np.asarray(cache.read(f"map:{layer}", np.arange(lo, hi), view=v)))
            t[~ok] = 0.0
            if tgt is None:
                tgt = np.zeros((cache.views, *t.shape), dtype=dt)
            tgt[v] = t.astype(dt)
            if not np.all(np.isfinite(tgt[v])):
                raise NonFiniteTargets(f"{layer} targets of images {lo}..{hi} (view {v}) are "
                                       f"not finite in {dtype}: use --dtype float32, larger "
                                       "--pts-t / --pts-n or another --transform")
        arrays[target_name(layer)] = tgt
    return arrays


def settings(layer_plan: dict, cache: Store) -> dict:
    if not layer_plan:
        return {}
    return {"layers": {t: {"stage": p["stage"], "dim": p["dim"]} for t, p in layer_plan.items()},
            "grid": cache.manifest["settings"]["grid"]}
