"""Linear probe: frozen backbone, pooled post-activation features (test transform, extracted
once), standardized logistic regression whose C is chosen on a stratified held-out part of the
TRAIN split only, then refit on the whole train split and scored once on test."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import torch
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from tqdm import tqdm

from ..models import FeatureNet
from ..runtime import autocast

log = logging.getLogger(__name__)
C_GRID = tuple(float(c) for c in np.logspace(-3, 2, 6))  # 1e-3 ... 1e2
VAL_FRACTION = 0.2
MAX_ITER = 1000


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


def _fit(c: float, x: np.ndarray, y: np.ndarray, seed: int) -> tuple[Pipeline, bool]:
    probe = make_probe(c, seed)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        probe.fit(x, y)
    return probe, any(issubclass(w.category, ConvergenceWarning) for w in caught)


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
    scores = {}
    for c in grid:
        probe, _ = _fit(c, x[fit], y[fit], seed)
        scores[c] = accuracy(probe.predict(x[val]), y[val])
    best = max(grid, key=lambda c: (scores[c], -c))
    return best, {"val_top1": scores[best], "val_grid": {f"{c:g}": s for c, s in scores.items()},
                  "n_fit": int(len(fit)), "n_val": int(len(val)), "stratified": stratified}


def accuracy(pred, target) -> float:
    """Top-1 accuracy in percent."""
    pred, target = np.asarray(pred), np.asarray(target)
    if len(target) == 0:
        return float("nan")
    return float((pred == target).mean() * 100.0)


def linear_probe(train: tuple[np.ndarray, np.ndarray], test: tuple[np.ndarray, np.ndarray],
                 seed: int, grid=C_GRID) -> dict:
    """Choose C on train (held-out part), refit on all of train, score test once."""
    (x_tr, y_tr), (x_te, y_te) = train, test
    c, info = choose_c(x_tr, y_tr, seed, grid)
    probe, not_converged = _fit(c, x_tr, y_tr, seed)
    if not_converged:
        log.warning("logistic regression did not converge in %d iterations (C=%g)", MAX_ITER, c)
    return {"seed": seed, "test_top1": accuracy(probe.predict(x_te), y_te), "C": c,
            "train_top1": accuracy(probe.predict(x_tr), y_tr), "converged": not not_converged,
            **info}
