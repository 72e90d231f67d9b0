"""Aligners (teacher width -> student width) and transforms (paper Sec 3.2, 3.3).

Every aligner is a centred linear map ``aligned = (x - center) @ W``:
- ``svd``: centre = mean, W = top-D principal directions (descending variance);
- ``cs-var``: W selects the D raw channels of highest variance (no centring);
- ``cs-rand``: W selects D channels drawn from a seed;
- ``interp``: W selects channels by 1-D nearest-neighbour resize of D_t to D;
- ``identity``: W = I (D must equal D_t).
Transforms: ``pts`` sign(x)|x/T|^(1/n); ``sn`` divide each channel by its std; ``sm`` scale
each channel's std to the matching top-D raw std; ``none``.

Null directions (svd): a teacher feature can have fewer than D directions of real variance
(EfficientNet-Lite / MobileNet features are a 1x1 conv + BN of 320 channels, so rank <= 320
< 512 for a ResNet-18 student). Components whose std is below ``NULL_RTOL`` of the top one
hold only the cache's storage rounding. ``null="keep"`` (default: the paper's exact target
definition) keeps them, and PTS / SN / SM amplify that noise into targets that depend on the
storage dtype; ``null="zero"`` gives them target 0 (measured accuracy-neutral in
benchmarks/results/repro-small.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np

from ..errors import InputError
from ..names import ALIGNERS, NULLS, TRANSFORMS  # noqa: F401  (defined once, there)
from .checks import min_rows
from .moments import Moments, pca

if TYPE_CHECKING:  # torch only where a tensor is mapped: fit-svd's checks run without it
    import torch

NULL_RTOL = 1e-3  # std relative to the top component (float16 rounding sits near 1e-4)


@dataclass(frozen=True)
class AlignSpec:
    dim: int
    aligner: str = "svd"
    transform: str = "pts"
    pts_t: float = 0.1   # paper Table 5 best
    pts_n: float = 3.0
    seed: int = 0        # cs-rand only
    null: str = "keep"   # svd: target of directions without teacher variance ("keep" | "zero")

    def to_json(self) -> dict:
        d = asdict(self)
        if d["null"] == "keep":  # the default; specs written before the option read as "keep"
            del d["null"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> AlignSpec:
        return cls(**{"null": "keep", **d})


@dataclass
class Projection:
    spec: AlignSpec
    center: np.ndarray       # (D_t,)
    weight: np.ndarray       # (D_t, D)
    scale: np.ndarray        # (D,) per-channel multiplier applied after the map (sn / sm)
    eigenvalues: np.ndarray  # (D_t,) descending covariance eigenvalues of the raw features
    raw_std: np.ndarray      # (D_t,)
    null_dims: int = 0       # svd components without teacher variance (see NULL_RTOL)

    def live(self) -> np.ndarray:
        """Target channels that carry a signal (False: null directions given target 0)."""
        return np.any(self.weight != 0, axis=0)

    def aligned_std(self, cov: np.ndarray) -> np.ndarray:
        return np.sqrt(np.clip(aligned_var(self.weight, cov), 0, None))

    def apply(self, x: np.ndarray) -> np.ndarray:
        """float64 reference implementation (targets are computed with it)."""
        a = (np.asarray(x, dtype=np.float64) - self.center) @ self.weight * self.scale
        return transform(a, self.spec)

    def apply_torch(self, x: torch.Tensor) -> torch.Tensor:
        """Same map in float32 torch (for online distillation)."""
        import torch
        c = torch.as_tensor(self.center, dtype=torch.float32, device=x.device)
        w = torch.as_tensor(self.weight * self.scale, dtype=torch.float32, device=x.device)
        a = (x.float() - c) @ w
        if self.spec.transform == "pts":
            return torch.sign(a) * (a.abs() / self.spec.pts_t).pow(1.0 / self.spec.pts_n)
        return a

    def arrays(self) -> dict:
        return {"center": self.center, "weight": self.weight, "scale": self.scale,
                "eigenvalues": self.eigenvalues, "raw_std": self.raw_std}


def aligned_var(w: np.ndarray, cov: np.ndarray) -> np.ndarray:
    """diag(W^T C W) without forming it (one matmul; einsum's 3-operand path is ~40x slower)."""
    return (w * (cov @ w)).sum(axis=0)


def pts(x: np.ndarray, t: float, n: float) -> np.ndarray:
    return np.sign(x) * np.power(np.abs(x) / t, 1.0 / n)


def transform(a: np.ndarray, spec: AlignSpec) -> np.ndarray:
    return pts(a, spec.pts_t, spec.pts_n) if spec.transform == "pts" else a


def check_spec(spec: AlignSpec, teacher_dim: int) -> None:
    if spec.aligner not in ALIGNERS:
        raise InputError(f"unknown aligner {spec.aligner!r}; known: {', '.join(ALIGNERS)}")
    if spec.transform not in TRANSFORMS:
        raise InputError(f"unknown transform {spec.transform!r}; known: {', '.join(TRANSFORMS)}")
    if spec.null not in NULLS:
        raise InputError(f"unknown --null {spec.null!r}; known: {', '.join(NULLS)}")
    if spec.dim < 1:
        raise InputError(f"--dim must be >= 1, got {spec.dim}")
    if spec.aligner == "identity" and spec.dim != teacher_dim:
        raise InputError(f"--aligner identity needs --dim equal to the teacher width "
                         f"{teacher_dim}, got {spec.dim}")
    if spec.dim > teacher_dim:
        raise InputError(f"--dim {spec.dim} is larger than the teacher width {teacher_dim}; "
                         f"{spec.aligner} can only reduce (use a 1x1-conv objective instead)")
    if spec.transform == "pts" and (spec.pts_t <= 0 or spec.pts_n <= 0):
        raise InputError("--pts-t and --pts-n must be > 0")


def fit_projection(spec: AlignSpec, m: Moments) -> Projection:
    """Build the projection of ``spec`` from the streaming moments ``m`` of the raw features."""
    dt = m.mean.shape[0]
    check_spec(spec, dt)
    need = min_rows(spec.dim, spec.aligner, spec.null)
    if m.n < need:  # fit-svd refuses this from the manifest first (fitcheck.check_rows)
        raise InputError(f"only {m.n} fitted samples for a {spec.dim}-component {spec.aligner} "
                         f"projection: need at least {need} (more rows, a smaller --dim or "
                         "--null zero)")
    raw_std = np.sqrt(m.var)
    evals, evecs = pca(m) if spec.aligner == "svd" else (np.linalg.eigvalsh(m.cov)[::-1], None)
    center = np.zeros(dt)
    weight = np.zeros((dt, spec.dim))
    null = np.zeros(spec.dim, dtype=bool)
    if spec.aligner == "svd":
        center, weight = m.mean.copy(), evecs[:, :spec.dim].copy()
        std = np.sqrt(np.clip(evals[:spec.dim], 0, None))
        null = std <= NULL_RTOL * std[0]
        if spec.null == "zero":
            weight[:, null] = 0.0
    else:
        if spec.aligner == "cs-var":
            idx = np.argsort(-raw_std, kind="stable")[:spec.dim]
        elif spec.aligner == "cs-rand":
            idx = np.sort(np.random.default_rng(spec.seed).choice(dt, spec.dim, replace=False))
        elif spec.aligner == "interp":  # nearest-neighbour 1-D resize (torch 'nearest')
            idx = np.floor(np.arange(spec.dim) * (dt / spec.dim)).astype(np.int64)
        else:
            idx = np.arange(dt)
        weight[idx, np.arange(spec.dim)] = 1.0
    proj = Projection(spec, center, weight, np.ones(spec.dim), np.clip(evals, 0, None), raw_std,
                      int(null.sum()))
    if spec.transform in ("sn", "sm"):
        live = proj.live()  # null-zeroed channels stay 0 whatever their scale
        a_std = proj.aligned_std(m.cov)
        if np.any(a_std[live] <= 0):
            raise InputError(f"{int(np.sum(a_std[live] <= 0))} aligned channels are constant on "
                             f"the fitted data: {spec.transform} cannot scale them")
        target = np.broadcast_to(1.0 if spec.transform == "sn"
                                 else np.sort(raw_std)[::-1][:spec.dim], (spec.dim,))
        proj.scale[live] = target[live] / a_std[live]
    return proj
