"""The device part of replay: colour jitter in each view's stored order, PCA lighting and
normalization, as tensor ops on a whole uint8 batch on whatever device it lives on.

It computes exactly what :func:`kdep_cache.views.augment.render` + ``normalize`` compute for one
image (the same float32 operations in the same order), so on the CPU a batch is bitwise the
one-image renders (tested), and a CUDA batch agrees within float32 rounding (tested where
CUDA exists). The per-image scalars (jitter factors, ``1 - f``, lighting shifts) are made on
the CPU exactly as the one-image render makes them; for a device batch they travel packed in
one pinned tensor, copied once without blocking the host (:func:`pack_params`).
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
    if x.device.type != "cpu":  # one pinned copy per batch, no host wait
        packed = pack_params(p, mean, std, pin=x.device.type == "cuda")
        return finish_packed(x, packed.to(x.device, non_blocking=True), p)
    x = x.to(torch.float32).div_(255.0)
    jit = ~np.all(p[:, 7:10] == 1.0, axis=1)
    if jit.any():
        ops = _ORDER_TABLE[p[:, 10].astype(np.int64)]
        f = torch.from_numpy(p[:, 7:10].astype(np.float32))
        w = torch.from_numpy((1.0 - p[:, 7:10]).astype(np.float32))
        for t in range(3):
            for k in range(3):
                sel = np.flatnonzero(jit & (ops[:, t] == k))
                if len(sel) == len(p):
                    x = _apply(k, x, f[:, k], w[:, k])
                elif len(sel):
                    idx = torch.from_numpy(sel)
                    x[idx] = _apply(k, x[idx], f[idx, k], w[idx, k])
    if np.any(p[:, 11:14] != 0.0):
        x = x + lighting_shifts(p).view(-1, 3, 1, 1)
    m = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (x - m) / s


def _selection(p: np.ndarray) -> np.ndarray:
    """(n, 3, 3) bool: view j applies jitter op k at position t."""
    jit = ~np.all(p[:, 7:10] == 1.0, axis=1)
    ops = _ORDER_TABLE[p[:, 10].astype(np.int64)]
    return jit[:, None, None] & (ops[:, :, None] == np.arange(3)[None, None, :])


def pack_params(p: np.ndarray, mean, std, pin: bool = False) -> torch.Tensor:
    """Everything the device part needs of a batch, as ONE float32 tensor (pinned when
    ``pin``) so that it crosses to the device in one non-blocking copy: per view the jitter
    factors, ``1 - f``, the lighting shift and the op selection (n x 18), then mean and std."""
    n = len(p)
    per_view = np.concatenate([p[:, 7:10].astype(np.float32),
                               (1.0 - p[:, 7:10]).astype(np.float32),
                               lighting_shifts(p).numpy(),
                               _selection(p).reshape(n, 9).astype(np.float32)], axis=1)
    tail = np.concatenate([np.asarray(mean, np.float32), np.asarray(std, np.float32)])
    t = torch.from_numpy(np.concatenate([per_view.reshape(-1), tail]))
    return t.pin_memory() if pin else t


def finish_packed(x: torch.Tensor, packed: torch.Tensor, p: np.ndarray) -> torch.Tensor:
    """:func:`finish` with the batch's numbers already on ``x``'s device (:func:`pack_params`);
    ``p`` (host) only decides which ops run, so nothing waits for the device. An op that only
    some views apply runs on all and is kept where selected (same values)."""
    n = x.shape[0]
    per_view, tail = packed[:n * 18].view(n, 18), packed[n * 18:]
    f, w, shift, sel = per_view[:, 0:3], per_view[:, 3:6], per_view[:, 6:9], per_view[:, 9:18]
    x = x.to(torch.float32).div_(255.0)
    host_sel = _selection(p).reshape(n, 9)
    for t in range(3):
        for k in range(3):
            c = 3 * t + k
            if host_sel[:, c].all():
                x = _apply(k, x, f[:, k], w[:, k])
            elif host_sel[:, c].any():
                keep = sel[:, c].view(-1, 1, 1, 1) > 0.5
                x = torch.where(keep, _apply(k, x, f[:, k], w[:, k]), x)
    if np.any(p[:, 11:14] != 0.0):
        x = x + shift.reshape(-1, 3, 1, 1)
    return (x - tail[:3].view(1, -1, 1, 1)) / tail[3:].view(1, -1, 1, 1)
