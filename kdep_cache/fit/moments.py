"""Streaming, mergeable moment statistics and the PCA basis they give.

:class:`Moments` keeps count, mean and the centred scatter matrix in float64 and merges
batches with Chan et al.'s parallel update, so per-shard / per-rank statistics add up to
the statistics of the whole (up to float64 rounding) and memory is O(D^2), not O(N).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Moments:
    n: int
    mean: np.ndarray   # (D,) float64
    m2: np.ndarray     # (D, D) float64, sum of (x - mean)(x - mean)^T

    @classmethod
    def empty(cls, dim: int) -> "Moments":
        return cls(0, np.zeros(dim), np.zeros((dim, dim)))

    @classmethod
    def of(cls, x: np.ndarray) -> "Moments":
        x = np.asarray(x, dtype=np.float64)
        mean = x.mean(axis=0) if len(x) else np.zeros(x.shape[1])
        xc = x - mean
        return cls(len(x), mean, xc.T @ xc)

    def merge(self, other: "Moments") -> "Moments":
        if other.n == 0:
            return self
        if self.n == 0:
            return other
        n = self.n + other.n
        delta = other.mean - self.mean
        mean = self.mean + delta * (other.n / n)
        m2 = self.m2 + other.m2 + np.outer(delta, delta) * (self.n * other.n / n)
        return Moments(n, mean, m2)

    def update(self, x: np.ndarray) -> "Moments":
        return self.merge(Moments.of(x))

    @property
    def cov(self) -> np.ndarray:
        return self.m2 / max(self.n - 1, 1)

    @property
    def var(self) -> np.ndarray:
        return np.diag(self.m2) / max(self.n - 1, 1)


def fix_signs(components: np.ndarray) -> np.ndarray:
    """Flip each column so its largest-magnitude entry (first on ties) is positive."""
    idx = np.argmax(np.abs(components), axis=0)
    signs = np.sign(components[idx, np.arange(components.shape[1])])
    signs[signs == 0] = 1.0
    return components * signs


def pca(m: Moments) -> tuple[np.ndarray, np.ndarray]:
    """All eigenvalues (descending) and eigenvectors (columns, sign-fixed) of the covariance."""
    evals, evecs = np.linalg.eigh(m.cov)
    order = np.argsort(evals)[::-1]
    evals = np.clip(evals[order], 0.0, None)
    return evals, fix_signs(evecs[:, order])


def std_ratio(std: np.ndarray) -> float:
    """Largest / smallest per-channel std (paper Sec 3.3); inf if a channel is constant."""
    std = np.asarray(std, dtype=np.float64)
    lo = std.min()
    return float(std.max() / lo) if lo > 0 else float("inf")
