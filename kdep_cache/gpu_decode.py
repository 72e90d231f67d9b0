"""``--decode gpu``: JPEGs decoded in batches by nvJPEG (``torchvision.io.decode_jpeg`` on
CUDA), cropped, resized (bilinear, antialiased) and flipped on the GPU.

Its pixels differ from PIL's (another IDCT and resampler), so it is its own render method
(``names.RENDER_GPU``, recorded in the cache): a cache rendered so is replayed so, and a
PIL-rendered cache is never replayed by it. CUDA only; NOT RUN on this project's CPU machine
(``benchmarks/gpu_check.sh`` exercises it on a lent GPU).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .augment import N_PARAMS, AugmentSpec, sample_params
from .digest import file_identity
from .errors import InputError
from .names import RENDER_GPU

NO_CUDA = ("--decode gpu decodes JPEGs with torchvision.io.decode_jpeg on CUDA, and there is "
           "no CUDA device here: use --decode cpu")


def require_cuda(device: torch.device | None = None) -> None:
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        raise InputError(NO_CUDA)


def check_decode(decode: str | None, spec: AugmentSpec, device: torch.device) -> None:
    """train-student --decode against the method the cache's views were rendered with."""
    rendered_gpu = spec.render == RENDER_GPU
    if decode is None:
        decode = "gpu" if rendered_gpu else "cpu"
    if (decode == "gpu") != rendered_gpu:
        raise InputError(f"--decode {decode}: the cache's views were rendered by "
                         f"{spec.render}; replaying them another way gives other pixels "
                         f"(use --decode {'gpu' if rendered_gpu else 'cpu'})")
    if rendered_gpu:
        require_cuda(device)


def read_item(images, i: int, views, spec: AugmentSpec, seed: int, params=None):
    """Worker side: the file's bytes and each view's parameters (sampled on the oriented
    size from the header). -> (i, bytes uint8 (n,), params (K, P), ok, reason, ident)."""
    from .data import _jpeg_size
    path = Path(images.root) / images.paths[i]
    why = images.problem(i)  # a FIFO, a device, a huge file: skipped unread (#23.3)
    ident = file_identity(path) if why is None else (-1, bytes(32))
    size_hw = _jpeg_size(path) if why is None else None
    if size_hw is None:
        return (i, torch.zeros(0, dtype=torch.uint8), torch.zeros(len(views), N_PARAMS,
                dtype=torch.float64), False, why or "not a JPEG: --decode gpu reads JPEGs only",
                ident)
    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    if params is None:
        params = np.stack([sample_params(spec, seed, v, i, *size_hw) for v in views])
    return i, data, torch.from_numpy(np.asarray(params, dtype=np.float64)), True, "", ident


class GpuItems(Dataset):
    """Items of :func:`read_item` for extract (``views`` sampled) or replay (stored)."""

    def __init__(self, images, ids, views, spec: AugmentSpec, seed: int):
        self.images, self.ids, self.views, self.spec, self.seed = images, ids, views, spec, seed

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int):
        return read_item(self.images, int(self.ids[j]), self.views, self.spec, self.seed)


def collate_bytes(batch):
    """Like :class:`kdep_cache.data.Collate`, with the views as a list of each file's bytes."""
    ids, datas, ps, ok, reasons, idents = zip(*batch)
    sizes = np.array([s for s, _ in idents], dtype=np.int64)
    shas = np.frombuffer(b"".join(h for _, h in idents), dtype=np.uint8).reshape(len(ids), -1)
    return (torch.tensor(ids), list(datas), torch.stack(ps), torch.tensor(ok), list(reasons),
            torch.from_numpy(sizes), torch.from_numpy(shas.copy()))


def render_batch(datas: list, params: torch.Tensor, size: int, device) -> torch.Tensor:
    """(n images' bytes, params (n, K, P)) -> uint8 views (n, K, 3, S, S) on ``device``."""
    import torch.nn.functional as F
    from torchvision.io import ImageReadMode, decode_jpeg
    good = [n for n, d in enumerate(datas) if len(d)]  # unreadable items: zeros (skipped)
    imgs = decode_jpeg([datas[n] for n in good], mode=ImageReadMode.RGB, device=device,
                       apply_exif_orientation=True) if good else []
    out = torch.zeros(len(datas), params.shape[1], 3, size, size, dtype=torch.uint8,
                      device=device)
    for n, img in zip(good, imgs):
        for k, p in enumerate(params[n].tolist()):
            top, left, ch, cw = (int(v) for v in p[0:4])
            crop = img[:, top:top + ch, left:left + cw].unsqueeze(0).float()
            v = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
            v = v.round_().clamp_(0, 255).to(torch.uint8)
            out[n, k] = v.flip(-1) if p[6] >= 0.5 else v
    return out
