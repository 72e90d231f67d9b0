"""Teacher diagnostics (paper Sec 3.3, 3.4, 4.4): what a raw cache says about its teacher.

``diagnose(cache, out, targets=None)`` reads a complete raw cache (and, optionally, a targets
dir fitted on it) and writes ``diagnose.json`` plus PNG figures into ``out``:

- Std Ratio (paper Sec 3.3: largest / smallest per-channel std over the samples) and the
  per-channel stds of the raw features, and with ``targets`` of the projected features
  before (``aligned``) and after (``transformed``) the transform — the same functions
  fit-svd uses (:func:`kdep_cache.fit.moments.std_ratio`, :meth:`Projection.aligned_std`);
- the explained-variance spectrum of the raw features (covariance eigenvalues / their sum);
- feature compactness. The paper (Sec 3.4, 4.4, limitations) defines it in words only:
  "the feature distribution of data samples of the same class lying tightly in the feature
  space while those of different classes far from each other", and finds compact teachers
  are worse KDEP teachers. Implemented as the Fisher scatter ratio
  ``compactness = tr(S_B) / tr(S_W)`` with ``tr(S_W) = 1/N sum_i ||x_i - mu_(y_i)||^2``
  (within-class) and ``tr(S_B) = 1/N sum_c n_c ||mu_c - mu||^2`` (between-class): large =
  tight classes far apart (compact), small = diverse. It is invariant to a global rescaling
  of the features, so teachers of any width and scale compare. Needs folder labels;
  ``within_class_fraction = tr(S_W) / tr(S_T)`` is reported beside it;
- a t-SNE map (scikit-learn) of a seeded subsample of the raw features, coloured by class.

Rows: the given views (default view 0, the view fit-svd fits on) of every valid image.
"""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path

import numpy as np

from ..cache.manifest import CONFIG
from ..cache.schema import MANIFEST, RAW, TARGETS, now_iso, producer_info
from ..cache.sidecar import read_image_list
from ..cache.store import Store
from ..checks import check_options
from ..errors import ArtifactError, InputError, LineageError
from ..fit.align import NULL_RTOL
from ..fit.moments import Moments, pca, std_ratio
from ..fit.projection import load_projection
from ..fit.run import accumulate, parse_views
from ..names import DIAGNOSE_REPORT, PROJECTION_FILE
from ..storage.fsio import write_json, writer_lock

DIAGNOSTICS = "kdep-cache/diagnostics"
REPORT = DIAGNOSE_REPORT
TSNE_POINTS = 1000  # t-SNE is O(n log n) per iteration: ~1,000 points take seconds on a CPU


def diagnose(cache: str | Path, out: str | Path, targets: str | Path | None = None,
             views: str = "0", tsne_points: int = TSNE_POINTS, seed: int = 0,
             plots: bool = True, downstream: str | Path | None = None, dim: int | None = None,
             max_images: int = 500, device: str = "auto") -> dict:
    """Compute every diagnostic, write ``out/diagnose.json`` (+ PNGs); return the report."""
    if Path(cache).is_file():
        raise InputError(f"{cache} is a file; diagnose reads a raw cache directory (extract --out)")
    if Path(cache).is_dir() and not any((Path(cache) / f).is_file() for f in (MANIFEST, CONFIG)):
        raise InputError(f"{cache} is not a kdep-cache cache (no {MANIFEST} or {CONFIG}); "
                         "diagnose reads a raw cache directory (extract --out)")
    store = Store(cache, RAW)
    if plots and importlib.util.find_spec("matplotlib") is None:
        raise InputError("diagnose draws its figures with matplotlib: pip install matplotlib "
                         "(or 'kdep-cache[plot]'), or pass --no-plots for the JSON only")
    vs = parse_views(views, store.views)
    check_options({"tsne_points": tsne_points, "seed": seed})
    imgs = read_image_list(store.dir, store.manifest["settings"])  # as fingerprinted
    labels = np.asarray(imgs.labels or [-1] * store.n_images)
    m = accumulate(store, vs)
    if m.n < 2:
        raise ArtifactError(f"{cache}: {m.n} valid feature rows in views {vs}; need at least 2")
    evals, _ = pca(m)
    evr = evals / max(evals.sum(), 1e-300)
    raw_std = np.sqrt(m.var)
    top = np.sqrt(evals[0])
    report = {
        "format": DIAGNOSTICS, "created": now_iso(), "producer": producer_info(),
        "cache": {"path": str(Path(cache).resolve()), "fingerprint": store.fingerprint,
                  "teacher": store.manifest.get("teacher", {}).get("name"),
                  "n_images": store.n_images, "views": store.views},
        "rows": {"views": vs, "samples": m.n},
        "class_names": imgs.classes or [],
        "std_ratio": {"raw": std_ratio(raw_std)},
        "channel_std": {"raw": raw_std.tolist()},
        "spectrum": {"explained_variance_ratio": evr.tolist(),
                     "cumulative": np.cumsum(evr).tolist(),
                     "components_for": {f"{p}%": int(np.searchsorted(np.cumsum(evr), p / 100)
                                                     + 1) for p in (50, 90, 99)},
                     "rank": int(np.sum(np.sqrt(evals) > NULL_RTOL * top)),
                     "rank_rule": f"components with std > {NULL_RTOL:g} x the top one"},
    }
    if targets is not None:
        report.update(_projected(store, Path(targets), m, vs))
    report["compactness"] = compactness(store, vs, labels, m.mean)
    report["tsne"] = tsne(store, vs[0], labels, tsne_points, seed)
    if downstream is not None:  # the distillation-set check (kdep_cache.diagnose.coverage)
        from .coverage import coverage
        report["downstream_check"] = coverage(cache, downstream, dim=dim or _width(targets),
                                              max_images=max_images, seed=seed, device=device)
    out = Path(out)
    with writer_lock(out):
        if plots:
            from .plots import write_plots
            report["figures"] = write_plots(report, out)
        write_json(out / REPORT, report)
    return report


def _width(targets) -> int | None:
    """The fitted projection's width (the student's), when a targets dir is given."""
    if targets is None:
        return None
    return int(Store(targets, TARGETS).manifest["dim"])


def _projected(store: Store, targets: Path, m: Moments, vs: list[int]) -> dict:
    """Per-channel stds of the projected features: aligned from the projection and the raw
    covariance (as fit-svd does), transformed from the stored targets of the same rows."""
    ts = Store(targets, TARGETS)
    if ts.manifest.get("cache_fingerprint") != store.fingerprint:
        raise LineageError(f"{targets} was fitted on cache "
                           f"{str(ts.manifest.get('cache_fingerprint'))[:16]}, not on "
                           f"{store.dir} ({store.fingerprint[:16]})")
    proj, attrs = load_projection(targets / PROJECTION_FILE)
    live = proj.live()
    a_std = proj.aligned_std(m.cov)
    tm = Moments.empty(proj.spec.dim)
    for v in vs:
        for lo, hi, valid in ts.iter_shards("valid"):
            rows = np.arange(lo, hi)[valid.astype(bool)]
            tm = tm.update(ts.read("targets", rows, view=v).astype(np.float64))
    t_std = np.sqrt(tm.var)
    real = a_std > NULL_RTOL * a_std.max()  # without the null directions (rank < width)
    return {"targets": {"path": str(targets.resolve()), "fingerprint": ts.fingerprint,
                        "projection": attrs.get("fingerprint"), "spec": proj.spec.to_json(),
                        "live_channels": int(live.sum())},
            "std_ratio_projected": {"aligned": std_ratio(a_std[live]),
                                    "transformed": std_ratio(t_std[live]),
                                    "aligned_real": std_ratio(a_std[real]),
                                    "transformed_real": std_ratio(t_std[real]),
                                    "real_directions": int(real.sum())},
            "channel_std_projected": {"aligned": a_std.tolist(), "transformed": t_std.tolist()},
            "projection_explained_variance": float(np.sum(a_std**2) / np.trace(m.cov))}


def _labelled_rows(store: Store, labels: np.ndarray):
    for lo, hi, valid in store.iter_shards("valid"):
        ids = np.arange(lo, hi)[valid.astype(bool) & (labels[lo:hi] >= 0)]
        if len(ids):
            yield ids


def compactness(store: Store, vs: list[int], labels: np.ndarray, center: np.ndarray) -> dict:
    """Fisher scatter ratio tr(S_B) / tr(S_W) of the labelled rows (see the module doc)."""
    classes = np.unique(labels[labels >= 0])
    if len(classes) < 2:
        return {"available": False, "reason": "the cache's images have fewer than 2 classes "
                "(extract from an ImageFolder tree with one folder per class)"}
    index = {int(c): i for i, c in enumerate(classes)}
    sums, counts, sq = np.zeros((len(classes), len(center))), np.zeros(len(classes)), 0.0
    for v in vs:  # one streaming pass, centred on the global mean for float64 accuracy
        for ids in _labelled_rows(store, labels):
            x = store.read("features", ids, view=v).astype(np.float64) - center
            cls = np.array([index[int(y)] for y in labels[ids]])
            np.add.at(sums, cls, x)
            counts += np.bincount(cls, minlength=len(classes))
            sq += float(np.sum(x * x))
    n = counts.sum()
    mu = sums.sum(0) / n
    total = sq / n - float(mu @ mu)
    between = float(np.sum(sums**2 / np.maximum(counts, 1)[:, None])) / n - float(mu @ mu)
    within = total - between
    return {"available": True,
            "compactness": float(between / within) if within > 0 else float("inf"),
            "within_class_fraction": float(within / total) if total > 0 else float("nan"),
            "trace_within": within, "trace_between": between, "trace_total": total,
            "classes": len(classes), "samples": int(n),
            "definition": "tr(S_B)/tr(S_W): between-class over within-class scatter "
                          "(higher = more compact)"}


def tsne(store: Store, view: int, labels: np.ndarray, points: int, seed: int) -> dict:
    """2-D t-SNE of at most ``points`` valid images of ``view`` (drawn by ``seed``)."""
    valid = np.concatenate([v for _, _, v in store.iter_shards("valid")]).astype(bool)
    ids = np.flatnonzero(valid)
    if points == 0 or len(ids) < 5:
        return {"available": False, "reason": "--tsne-points 0" if points == 0 else
                f"only {len(ids)} valid images (t-SNE needs at least 5)"}
    if len(ids) > points:
        ids = np.sort(np.random.default_rng(seed).choice(ids, points, replace=False))
    from sklearn.manifold import TSNE
    x = store.read("features", ids, view=view).astype(np.float64)
    perplexity = float(min(30.0, (len(ids) - 1) / 3))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        t = TSNE(2, perplexity=perplexity, init="pca", random_state=seed)
        emb = t.fit_transform(x)
    return {"available": True, "view": view, "seed": seed, "perplexity": perplexity,
            "ids": ids.tolist(), "labels": labels[ids].tolist(),
            "kl_divergence": float(t.kl_divergence_), "embedding": emb.tolist()}
