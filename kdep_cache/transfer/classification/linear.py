"""Linear probe: frozen backbone, pooled post-activation features (test transform, extracted
once), standardized logistic regression whose C is chosen on a stratified held-out part of the
TRAIN split only, then refit on the whole train split and scored once on test.

Convergence: lbfgs gets up to :data:`MAX_ITER` iterations (1,000 did not converge at C=100 on
separable few-shot features); every fit records its iterations, and the result records
whether the final fit converged, its iterations, the warning text if any, and how many grid
fits stopped at the cap."""

from __future__ import annotations

import logging
import time
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from ...errors import ArtifactError
from ...models import FeatureNet
from ...runtime.device import autocast
from .metrics import accuracy, scores

log = logging.getLogger(__name__)
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))  # 1e-3 ... 1e2
VAL_FRACTION = 0.2
MAX_ITER = 10000


@torch.no_grad()
def extract_features(net: FeatureNet, batches, device: torch.device, precision: str,
                     desc: str = "features") -> tuple[np.ndarray, np.ndarray]:
    """Pooled ``post`` features (final activation applied) and labels of every batch."""
    net.eval()
    feats, labels = [], []
    for x, y in tqdm(batches, desc=desc, unit="batch", disable=None, leave=False):
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            out = net(x, want_post=True)
        feats.append(out["post"].float().cpu().numpy())
        labels.append(y.numpy())
    return np.concatenate(feats), np.concatenate(labels).astype(np.int64)


def make_probe(c: float, seed: int) -> Pipeline:
    return make_pipeline(StandardScaler(), LogisticRegression(
        C=c, solver="lbfgs", max_iter=MAX_ITER, random_state=seed))


def _fit(c: float, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Pipeline, dict]:
    """The fitted probe and its convergence record (converged, n_iter, warning)."""
    probe = make_probe(c, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x, y)
    warn = [str(w.message).splitlines()[0] for w in caught
            if issubclass(w.category, ConvergenceWarning)]
    n_iter = int(np.max(probe[-1].n_iter_))
    return probe, {"converged": not warn, "n_iter": n_iter, "max_iter": MAX_ITER,
                   "warning": warn[0] if warn else None}


def val_split(y: np.ndarray, seed: int, fraction: float = VAL_FRACTION
              ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Indices (fit, val) of the train split; stratified when every class allows it."""
    idx = np.arange(len(y))
    n_val = max(1, int(round(fraction * len(y))))
    counts = np.bincount(y)
    stratify = bool(counts[counts > 0].min() >= 2 and n_val >= (counts > 0).sum())
    if not stratify:
        log.warning("some classes have too few train images for a stratified validation "
                    "split: using a plain random one")
    fit, val = train_test_split(idx, test_size=n_val, random_state=seed, shuffle=True,
                                stratify=y if stratify else None)
    return np.sort(fit), np.sort(val), stratify


def choose_c(x: np.ndarray, y: np.ndarray, seed: int, grid=C_GRID) -> tuple[float, dict]:
    """Best C on a held-out part of (x, y), which must be TRAIN data only; ties -> smaller C."""
    fit, val, stratified = val_split(y, seed)
    val_scores, capped = {}, 0
    for i, c in enumerate(grid):
        t0 = time.perf_counter()
        probe, conv = _fit(c, x[fit], y[fit], seed)
        capped += not conv["converged"]
        val_scores[c] = accuracy(probe.predict(x[val]), y[val])
        # one line per fit: on wide features (1280-d MobileNetV2, busy CPU) a seed's grid
        # took minutes with nothing printed (issue 24)
        log.info("linear probe seed %d: C=%g (%d/%d) val top-1 %.2f, %d iterations, %.1f s",
                 seed, c, i + 1, len(grid), val_scores[c], conv["n_iter"],
                 time.perf_counter() - t0)
    best = max(grid, key=lambda c: (val_scores[c], -c))
    return best, {"val_top1": val_scores[best],
                  "val_grid": {f"{c:g}": s for c, s in val_scores.items()},
                  "grid_not_converged": capped, "n_fit": int(len(fit)), "n_val": int(len(val)), "stratified": stratified}


def linear_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 seed: int, grid=C_GRID, classes: list[str] | None = None) -> dict:
    """Choose C on train (held-out part), refit on all of train, score test once: top-1,
    balanced accuracy, per-class accuracy, and the final fit's convergence."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    for name, x in (("train", x_tr), ("test", x_te)):
        bad = int((~np.isfinite(x)).any(axis=1).sum())
        if bad:
            raise ArtifactError(f"the student's features are not finite (NaN / inf) on {bad} of "
                                f"the {len(x)} {name} images: its weights hold NaN or inf (a "
                                "diverged or damaged student); retrain it or pick another")
    c, info = choose_c(x_tr, y_tr, seed, grid)
    probe, conv = _fit(c, x_tr, y_tr, seed)
    if not conv["converged"]:
        log.warning("logistic regression did not converge in %d iterations (C=%g)", MAX_ITER, c)
    classes = classes or [str(i) for i in range(int(max(y_tr.max(), y_te.max())) + 1)]
    return {"seed": seed, **scores(probe.predict(x_te), y_te, classes), "C": c,
            "train_top1": accuracy(probe.predict(x_tr), y_tr), **conv, **info}
