"""The device part of replay: colour jitter in each view's stored order, PCA lighting and
normalization, as tensor ops on a whole uint8 batch on whatever device it lives on.

It computes exactly what :func:`kdep_cache.augment.render` + ``normalize`` compute for one
image (the same float32 operations in the same order), so on the CPU a batch is bitwise the
one-image renders (tested), and a CUDA batch agrees within float32 rounding (tested where
CUDA exists). The per-image scalars (jitter factors, ``1 - f``, lighting shifts) are made on
the CPU exactly as the one-image render makes them, then moved to the batch's device.
"""

from __future__ import annotations

import numpy as np
import torch

from .augment import _EIGVAL, _EIGVEC, _ORDERS

_ORDER_TABLE = np.array(_ORDERS, dtype=np.int64)  # (6, 3): jitter op at each position


def _gray(x: torch.Tensor) -> torch.Tensor:
    """(n, 3, S, S) -> (n, S, S), the same weights and order as the one-image render."""
    return 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]


def _image_means(g: torch.Tensor) -> torch.Tensor:
    """Mean of each image's gray plane. On the CPU one reduction per image, as the one-image
    render does (a batched reduction sums in another order: not bitwise); on CUDA batched."""
    if g.device.type == "cpu":
        return torch.stack([g[j].mean() for j in range(g.shape[0])])
    return g.mean(dim=(1, 2))


def _apply(k: int, x: torch.Tensor, f: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """Jitter op ``k`` (brightness, contrast, saturation) with factors ``f`` and ``1 - f``
    (``w``), each (n,) float32, on a (n, 3, S, S) batch."""
    f4, w4 = f.view(-1, 1, 1, 1), w.view(-1, 1, 1, 1)
    if k == 0:
        return (x * f4).clamp_(0.0, 1.0)
    g = _gray(x)
    if k == 1:
        return (f4 * x + (w * _image_means(g)).view(-1, 1, 1, 1)).clamp_(0.0, 1.0)
    return (f4 * x + w4 * g.unsqueeze(1)).clamp_(0.0, 1.0)


def lighting_shifts(p: np.ndarray) -> torch.Tensor:
    """(n, 3) float32 RGB shift of each view's PCA lighting (0 where it has none)."""
    out = torch.zeros(len(p), 3, dtype=torch.float32)
    for j in np.flatnonzero(np.any(p[:, 11:14] != 0.0, axis=1)):
        alpha = torch.from_numpy(p[j, 11:14].astype(np.float32))
        out[j] = _EIGVEC @ (alpha * _EIGVAL)
    return out


def finish(x: torch.Tensor, params, mean, std) -> torch.Tensor:
    """uint8 views (n, 3, S, S) + their stored parameters (n, P) -> normalized float32 views,
    on ``x``'s device: ``/255``, jitter in the stored order, PCA lighting, normalization."""
    p = np.asarray(params.cpu() if torch.is_tensor(params) else params, dtype=np.float64)
    p = p.reshape(-1, p.shape[-1])
    if len(p) != x.shape[0]:
        raise ValueError(f"{x.shape[0]} views but {len(p)} parameter rows")
    dev = x.device
    x = x.to(torch.float32).div_(255.0)
    jit = ~np.all(p[:, 7:10] == 1.0, axis=1)
    if jit.any():
        ops = _ORDER_TABLE[p[:, 10].astype(np.int64)]
        f = torch.from_numpy(p[:, 7:10].astype(np.float32)).to(dev)
        w = torch.from_numpy((1.0 - p[:, 7:10]).astype(np.float32)).to(dev)
        for t in range(3):
            for k in range(3):
                sel = np.flatnonzero(jit & (ops[:, t] == k))
                if len(sel) == len(p):
                    x = _apply(k, x, f[:, k], w[:, k])
                elif len(sel):
                    idx = torch.from_numpy(sel).to(dev)
                    x[idx] = _apply(k, x[idx], f[idx, k], w[idx, k])
    if np.any(p[:, 11:14] != 0.0):
        x = x + lighting_shifts(p).to(dev).view(-1, 3, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32, device=dev).view(1, -1, 1, 1)
    return (x - m) / s
