"""Stage 1b: fit the aligner on the raw cache in one streaming pass; write aligned targets.

Output directory: ``projection.h5`` (the projection artifact), ``shard-NNNNN.h5`` with
``targets`` (K, n, D) and ``valid`` (n,) over the same image ranges as the cache, and
``manifest.json`` (lineage: source cache fingerprint, projection fingerprint, Std Ratios).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import h5py
import numpy as np
from threadpoolctl import threadpool_limits

from ..cache.manifest import (
    diff_settings,
    finalize_store,
    load_or_init_config,
    record_shard,
    shard_done,
)
from ..cache.schema import CONFIG, MANIFEST, PROJECTION_FILE, RAW, TARGETS, shard_name
from ..cache.store import Store, write_shard
from ..checks import check_options
from ..errors import ArtifactError, InputError
from ..runtime import dist
from ..runtime.progress import Progress
from ..storage.digest import array_sha
from ..storage.fsio import fingerprint, remove_files, writer_lock
from . import layer_pca
from .align import AlignSpec, Projection, check_spec, fit_projection
from .checks import check_rows, parse_views, rank_warning, raw_manifest  # noqa: F401  (parse_views re-exported)
from .moments import Moments, std_ratio
from .projection import load_projection, write_projection  # noqa: F401  (load_projection re-exported)

log = logging.getLogger(__name__)
ONE_SIDED = 0.05  # a target channel positive on fewer views than this is "one-sided"


@dataclass(frozen=True)  # resolved values are derived with dataclasses.replace
class FitConfig:
    cache: str
    out: str
    dim: int | None = None
    student: str | None = None
    aligner: str = "svd"
    transform: str = "pts"
    pts_t: float = 0.1
    pts_n: float = 3.0
    fit_views: str = "0"   # "0", "0,1", "all" (paper: one random view per image = view 0)
    dtype: str = "float16"
    seed: int = 0
    null: str = "keep"     # svd directions without teacher variance: "keep" (paper) | "zero"
    match: str | None = None  # cached teacher layer -> student stage (default: relative depth)


def accumulate(cache: Store, views: list[int], bar=None) -> Moments:
    """One pass over the fitted views of every valid image; refuses NaN/Inf."""
    m = Moments.empty(int(cache.manifest["dim"]))
    for (lo, hi, valid), v in ((vv, v) for v in views for vv in cache.iter_shards("valid")):
        x = np.asarray(cache.read("features", np.arange(lo, hi), view=v))[valid.astype(bool)]
        if not np.all(np.isfinite(x)):
            raise ArtifactError(f"{cache.dir}: non-finite raw features in images {lo}..{hi} "
                                f"(view {v}); re-extract with --precision fp32 / --dtype float32")
        m = m.update(x.astype(np.float64))
        if bar is not None:
            bar.update(hi - lo)
    return m


def fit_svd(cfg: FitConfig) -> dict:
    """Fit and write the targets. Under torchrun rank 0 does the whole job while the other
    ranks wait, chosen by measurement (benchmarks/results/ddp.json, gloo, 2 CPU ranks): one
    rank streams 8,000 2048-d rows/s into the float64 moments on one BLAS thread (1.28 M
    images x 1 fitted view: ~2.7 min) and the eigendecomposition takes 1.6 s; all-reducing
    the moments would take 0.03 s and save about two minutes once per projection, against
    hours of extract, at the price of a result that agrees with one process only to ~1e-12.
    On one rank it is bitwise the one-process result (tested)."""
    check_options(asdict(cfg))
    d = dist.context("cpu")
    if not d.main:
        status = d.broadcast_object(None, "fit-svd: waiting for rank 0 to fit the targets")
        if not status["ok"]:
            raise ArtifactError(f"rank 0 could not fit the targets: {status['error']}")
        return {"out": cfg.out, "rank": d.rank, "note": "rank 0 fitted the targets"}
    status = {"ok": False, "error": "it stopped"}
    try:
        # one BLAS thread: the float64 moments and the eigendecomposition are then bitwise the
        # same whatever the thread count (torchrun sets 1, a process alone gets all cores), and
        # a 2-thread OpenBLAS eigh that shares its cores collapses (measured 22 s vs 1.4 s)
        with threadpool_limits(1, user_api="blas"):
            summary = _fit(cfg)
        status = {"ok": True}
    except Exception as e:
        status = {"ok": False, "error": str(e)}
        raise
    finally:  # the waiting ranks learn the outcome, whatever it is
        d.broadcast_object(status, "fit-svd: releasing the waiting ranks")
    return summary


class NonFiniteTargets(ArtifactError):
    """The transform of these settings overflows the storage dtype."""


def _fit(cfg: FitConfig) -> dict:
    raw_manifest(cfg.cache)  # one line for a folder that is no raw cache, or an incomplete one
    cache = Store(cfg.cache, RAW)
    dim = _resolve_dim(cfg)
    spec = AlignSpec(dim, cfg.aligner, cfg.transform, cfg.pts_t, cfg.pts_n, cfg.seed, cfg.null)
    check_spec(spec, int(cache.manifest["dim"]))
    views = parse_views(cfg.fit_views, cache.views)
    check_rows(cache.manifest, views, dim, spec.aligner, spec.null)  # before any pass
    lplan = layer_pca.plan(cache, cfg.student, cfg.match)  # the cached maps (issue 27)
    out = Path(cfg.out)
    t0 = time.perf_counter()
    with writer_lock(out):
        if (out / MANIFEST).is_file():
            return _already_complete(out, cache, spec, views, cfg.dtype,
                                     layer_pca.settings(lplan, cache))
        bar = Progress(cache.n_images * len(views), "img", "fit-svd")
        m = accumulate(cache, views, bar)
        bar.line(f"moments of {m.n} rows (views {views}) accumulated")
        bar.close()
        proj = fit_projection(spec, m)
        fitted = layer_pca.fit_layers(cache, lplan, spec, views)
        t_fit = time.perf_counter() - t0
        proj_fp = fingerprint({"spec": spec.to_json(), "cache": cache.fingerprint,
                               "fit_views": views, "n": m.n,
                               "arrays": {k: array_sha(v) for k, v in proj.arrays().items()}})
        a_std = proj.aligned_std(m.cov)
        explained = float(np.sum(a_std**2) / max(np.trace(m.cov), 1e-300))
        settings = {"format": TARGETS, "cache": cache.fingerprint, "projection": proj_fp,
                    "spec": spec.to_json(), "fit_views": views, "dtype": cfg.dtype,
                    "n_images": cache.n_images, "views": cache.views, "dim": dim,
                    **layer_pca.settings(lplan, cache)}
        load_or_init_config(out, settings)
        try:
            write_projection(out / PROJECTION_FILE, proj, proj_fp, cache, views, m.n, explained)
            lrec = layer_pca.write_layer_projections(out, fitted, cache, views)
            t_std, positive = _write_targets(cache, proj, out, settings, views, cfg.dtype,
                                             fitted)
        except NonFiniteTargets:  # nothing these settings make is usable: leave nothing (#23.12)
            remove_files(out, (CONFIG, PROJECTION_FILE, "projection-*.h5", "shard-*.h5",
                               "shard-*.json"))
            raise
        one_sided = int(np.sum(positive[proj.live()] < ONE_SIDED))
        warnings = [w for w in (rank_warning(proj.null_dims, dim, spec.null, spec.transform),
                                one_sided_warning(one_sided, int(proj.live().sum()))) if w]
        for w in warnings:  # what --null zero asked for is no warning (nothing to act on)
            (log.info if w.endswith("(--null zero)") else log.warning)("%s", w)
        warning = " | ".join(warnings) or None
        ratios = {"raw": std_ratio(np.sqrt(m.var)), "aligned": std_ratio(a_std[proj.live()]),
                  "transformed": t_std, "rows": f"views {views} of valid images"}
        manifest = finalize_store(
            out, settings, len(cache.manifest["shards"]),
            ["targets", "valid", *map(layer_pca.target_name, fitted)],
            extra={"dim": dim, "source_cache": str(Path(cfg.cache).resolve()),
                   "std_ratio": ratios, "explained_variance": explained,
                   "fitted_samples": m.n, "projection_fingerprint": proj_fp,
                   "cache_fingerprint": cache.fingerprint, "null_dims": proj.null_dims,
                   "one_sided_channels": one_sided,
                   "warning": warning, **({"layers": lrec} if lrec else {})})
    return {**({"warning": warning} if warning else {}),  # first: it says what the targets are
            "out": str(out), "aligner": spec.aligner, "transform": spec.transform, "dim": dim,
            "teacher_dim": int(cache.manifest["dim"]), "fitted_samples": m.n,
            "explained_variance": round(explained, 6),
            "std_ratio_raw": round(manifest["std_ratio"]["raw"], 3),
            "std_ratio_aligned": round(manifest["std_ratio"]["aligned"], 3),
            "std_ratio_transformed": round(manifest["std_ratio"]["transformed"], 3),
            "fit_seconds": round(t_fit, 2), "seconds": round(time.perf_counter() - t0, 2),
            "projection": proj_fp[:16], "null_dims": proj.null_dims,
            **({"layers_explained_variance": {k: round(v["explained_variance"], 6)
                                              for k, v in lrec.items()}} if lrec else {})}


def _already_complete(out: Path, cache: Store, spec: AlignSpec, views, dtype: str,
                      layers: dict) -> dict:
    """A rerun over finished targets: nothing is recomputed if the settings are the same."""
    m = Store(out, TARGETS).manifest
    want = {"cache": cache.fingerprint, "spec": spec.to_json(), "fit_views": views,
            "dtype": dtype, **layers}
    diffs = diff_settings({k: m["settings"].get(k) for k in want}, json.loads(json.dumps(want)))
    if diffs:
        raise InputError(f"{out} already holds targets made with other settings; use a new "
                         f"--out. Differences: {'; '.join(diffs[:5])}")
    return {**({"warning": m["warning"]} if m.get("warning") else {}),
            "out": str(out), "complete": True, "dim": m["dim"], "aligner": spec.aligner,
            "transform": spec.transform, "projection": m["projection_fingerprint"][:16],
            "null_dims": m.get("null_dims"), "seconds": 0.0, "note": "already complete"}


def one_sided_warning(k: int, n: int) -> str | None:
    """One line when most target channels are rarely positive (raw channels of cs-var, interp):
    repro-small measured 444/512 such CS-var channels and 99.6 % zero student features."""
    if k <= n // 2:
        return None
    return (f"{k} of {n} target channels are positive on under "
            f"{ONE_SIDED:.0%} of the fitted views: a student regressing them gets mostly dead "
            "post-ReLU features (what transfer reads); --aligner svd gives centred targets")


def _resolve_dim(cfg: FitConfig) -> int:
    if (cfg.dim is None) == (cfg.student is None):
        raise InputError("give exactly one of --dim D or --student NAME")
    if cfg.student is not None:
        from ..models import student_width
        return student_width(cfg.student)
    return int(cfg.dim)


def _write_targets(cache: Store, proj: Projection, out: Path, settings: dict, fit_views,
                   dtype: str, fitted: dict | None = None) -> tuple[float, np.ndarray]:
    """Write every target shard (skipping complete ones); return the transformed Std Ratio and
    each channel's fraction of positive targets (fitted views)."""
    dt = np.float16 if dtype == "float16" else np.float32
    k, d = cache.views, proj.spec.dim
    tm, pos = Moments.empty(d), np.zeros(d)
    bar = Progress(cache.n_images, "img", "targets")
    for s, (lo, hi, valid) in enumerate(cache.iter_shards("valid")):
        ok = valid.astype(bool)
        path = out / shard_name(s)
        if shard_done(out, s, lo, hi):
            with h5py.File(path, "r") as f:
                for v in fit_views:
                    t = f["targets"][v][ok].astype(np.float64)
                    tm, pos = tm.update(t), pos + (t > 0).sum(0)
            bar.update(hi - lo)
            continue
        tgt = np.zeros((k, hi - lo, d), dtype=dt)
        for v in range(k):
            x = np.asarray(cache.read("features", np.arange(lo, hi), view=v))
            t = proj.apply(x)
            t[~ok] = 0.0
            tgt[v] = t.astype(dt)
            if not np.all(np.isfinite(tgt[v])):  # never write a non-finite target
                raise NonFiniteTargets(f"targets of images {lo}..{hi} (view {v}) are not finite "
                                       f"in {dtype} (largest |target| "
                                       f"{np.nanmax(np.abs(t)):.3g}): use --dtype float32, "
                                       "larger --pts-t / --pts-n or another --transform")
            if v in fit_views:
                t = tgt[v][ok].astype(np.float64)
                tm, pos = tm.update(t), pos + (t > 0).sum(0)
        entry = write_shard(path, {**settings, "start": lo, "stop": hi},
                            {"targets": tgt, "valid": valid.copy(), **layer_pca.layer_targets(
                                cache, fitted or {}, lo, hi, ok, dt, dtype)})
        record_shard(out, s, entry, lo, hi)
        bar.update(hi - lo)
        bar.line(f"shard {s + 1}/{len(cache.manifest['shards'])} (images {lo}..{hi}) written")
    bar.close()
    return std_ratio(np.sqrt(tm.var)[proj.live()]), pos / max(tm.n, 1)
