"""Classification scores from predictions: top-1, balanced accuracy (the mean of per-class
recalls over the classes present in the targets) and per-class accuracy, all in percent.

Balanced accuracy is what a majority-class predictor cannot inflate: on a 4:1 split it scores
50 %, while its top-1 is 80 %."""

from __future__ import annotations

import numpy as np


def confusion(pred, target, n_classes: int) -> np.ndarray:
    """``C[i, j]`` = number of samples of true class ``i`` predicted as ``j``."""
    pred, target = np.asarray(pred, np.int64).ravel(), np.asarray(target, np.int64).ravel()
    return np.bincount(target * n_classes + pred, minlength=n_classes ** 2).reshape(
        n_classes, n_classes)


def accuracy(pred, target) -> float:
    """Top-1 accuracy in percent (nan for no samples)."""
    pred, target = np.asarray(pred), np.asarray(target)
    if len(target) == 0:
        return float("nan")
    return float((pred == target).mean() * 100.0)


def per_class_accuracy(pred, target, classes: list[str]) -> dict:
    """Recall of every class in percent; ``None`` for a class with no test sample."""
    c = confusion(pred, target, len(classes))
    support = c.sum(1)
    return {name: (float(c[i, i] / support[i] * 100.0) if support[i] else None)
            for i, name in enumerate(classes)}


def balanced_accuracy(pred, target, n_classes: int) -> float:
    """Mean per-class recall (percent) over the classes that occur in ``target``."""
    c = confusion(pred, target, n_classes)
    support = c.sum(1)
    present = support > 0
    if not present.any():
        return float("nan")
    return float(np.mean(np.diag(c)[present] / support[present]) * 100.0)


def scores(pred, target, classes: list[str], prefix: str = "test") -> dict:
    """``{prefix}_top1``, ``{prefix}_balanced`` and ``{prefix}_per_class`` of predictions."""
    return {f"{prefix}_top1": accuracy(pred, target),
            f"{prefix}_balanced": balanced_accuracy(pred, target, len(classes)),
            f"{prefix}_per_class": per_class_accuracy(pred, target, classes)}
