"""``--decode gpu``: JPEGs decoded in batches by nvJPEG (``torchvision.io.decode_jpeg`` on
CUDA), cropped, resized (bilinear, antialiased) and flipped on the GPU.

Its pixels differ from PIL's (another IDCT and resampler), so it is its own render method
(``names.RENDER_GPU``, recorded in the cache): a cache rendered so is replayed so, and a
PIL-rendered cache is never replayed by it. CUDA only; NOT RUN on this project's CPU machine
(``benchmarks/gpu_check.sh`` exercises it on a lent GPU).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import Dataset

from ..errors import InputError
from ..names import RENDER_GPU
from .augment import N_PARAMS, AugmentSpec, sample_params
from .datasets import ViewBatch, ViewItem, batch_of, jpeg_header
from .readers import FolderReader

NO_CUDA = ("--decode gpu decodes JPEGs with torchvision.io.decode_jpeg on CUDA, and there is "
           "no CUDA device here: use --decode cpu")


GPU_CACHE_ON_CPU = ("the cache's views were rendered by nvJPEG (extract --decode gpu), and only "
                    "nvJPEG on a CUDA device replays them (PIL gives other pixels): train on a "
                    "CUDA device (--device cuda), or re-extract the cache with --decode cpu to "
                    "train here")


def require_cuda(device: torch.device | None = None) -> None:
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        raise InputError(NO_CUDA)


def check_decode(decode: str | None, spec: AugmentSpec, device: torch.device) -> None:
    """train-student --decode against the method the cache's views were rendered with."""
    rendered_gpu = spec.render == RENDER_GPU
    if decode is None:
        decode = "gpu" if rendered_gpu else "cpu"
    if rendered_gpu and (not torch.cuda.is_available() or device.type != "cuda"):
        raise InputError(GPU_CACHE_ON_CPU)  # whatever --decode says: nothing else replays it
    if (decode == "gpu") != rendered_gpu:
        raise InputError(f"--decode {decode}: the cache's views were rendered by "
                         f"{spec.render}; replaying them another way gives other pixels "
                         f"(use --decode {'gpu' if rendered_gpu else 'cpu'})")


class Jpeg(NamedTuple):
    """One file's bytes for nvJPEG, its EXIF orientation (nvJPEG ignores it) and its name."""

    data: torch.Tensor
    orientation: int = 1
    name: str = ""


class Rendered(NamedTuple):
    """uint8 views (n, K, 3, S, S) on the device; ``bad``: item -> why it was not rendered
    (its views are zeros)."""

    views: torch.Tensor
    bad: dict

    def mark(self, ok: torch.Tensor, reasons: list) -> torch.Tensor:
        """Record the failures in a batch's ``ok`` / ``reasons`` (in place); the views."""
        for n, why in self.bad.items():
            if ok[n]:
                ok[n], reasons[n] = False, why
        return self.views


def read_item(images, i: int, views, spec: AugmentSpec, seed: int, params=None, reader=None):
    """Worker side: the image's bytes (its file read once, or a pack's: ``reader``) and each
    view's parameters (sampled on the oriented size from the header).
    -> :class:`ViewItem` with ``views`` a :class:`Jpeg`."""
    read = (reader or FolderReader(images))(i)
    head = jpeg_header(read.src) if read.src is not None else None
    if head is None:
        return ViewItem(i, Jpeg(torch.zeros(0, dtype=torch.uint8), 1, images.paths[i]),
                        torch.zeros(len(views), N_PARAMS, dtype=torch.float64), False,
                        read.why or "not a JPEG: --decode gpu reads JPEGs only", read.ident)
    data = torch.frombuffer(bytearray(read.src.data), dtype=torch.uint8)
    if params is None:
        params = np.stack([sample_params(spec, seed, v, i, head[0], head[1]) for v in views])
    return ViewItem(i, Jpeg(data, head[2], images.paths[i]),
                    torch.from_numpy(np.asarray(params, dtype=np.float64)), True, "", read.ident,
                    read.packed)


class GpuItems(Dataset):
    """Items of :func:`read_item` for extract (``views`` sampled) or replay (stored)."""

    def __init__(self, images, ids, views, spec: AugmentSpec, seed: int, reader=None):
        self.images, self.ids, self.views, self.spec, self.seed = images, ids, views, spec, seed
        self.reader = reader

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, j: int):
        return read_item(self.images, int(self.ids[j]), self.views, self.spec, self.seed,
                         reader=self.reader)


def collate_bytes(items) -> ViewBatch:
    """Like :class:`kdep_cache.views.datasets.Collate`, with the views as a list of :class:`Jpeg`."""
    return batch_of(items, [it.views for it in items])


def _decode(datas: list, device) -> list:
    """nvJPEG on CUDA (libjpeg on the CPU): RGB, EXIF orientation NOT applied (nvJPEG cannot)."""
    from torchvision.io import ImageReadMode, decode_jpeg
    return decode_jpeg(datas, mode=ImageReadMode.RGB, device=device)


def decode_each(jpegs: list, device) -> tuple[list, dict]:
    """Decode ``jpegs`` in one batch; if the batch fails (one undecodable, CMYK or otherwise
    nvJPEG-unsupported file fails all), one by one, a file nvJPEG refuses by libjpeg on the
    CPU. -> (images (3, H, W) oriented, None where failed; {n: reason})."""
    jpegs = [j if isinstance(j, Jpeg) else Jpeg(j) for j in jpegs]
    good = [n for n, j in enumerate(jpegs) if len(j.data)]  # unreadable items: skipped
    imgs, bad = [None] * len(jpegs), {}
    try:
        for n, img in zip(good, _decode([jpegs[n].data for n in good], device) if good else []):
            imgs[n] = img
    except Exception:  # noqa: BLE001 - the batch failed as a whole: find the file(s)
        for n in good:
            try:
                imgs[n] = _decode([jpegs[n].data], device)[0]
            except Exception as e:  # noqa: BLE001
                try:  # e.g. CMYK: libjpeg converts it (the same fallback on replay)
                    if torch.device(device).type == "cpu":
                        raise
                    imgs[n] = _decode([jpegs[n].data], "cpu")[0].to(device)
                except Exception:  # noqa: BLE001
                    bad[n] = f"cannot be decoded ({type(e).__name__}: {_first_line(e)})"
    for n in good:
        if imgs[n] is not None:
            imgs[n] = apply_exif_orientation(imgs[n], jpegs[n].orientation)
    return imgs, bad


def render_batch(datas: list, params: torch.Tensor, size: int, device) -> Rendered:
    """(n images' :class:`Jpeg` (or bytes), params (n, K, P)) -> :class:`Rendered`: uint8
    views (n, K, 3, S, S) on ``device``, cropped in the oriented image the parameters were
    sampled on; a file that cannot be decoded, or decodes to another size than its header
    says, is named in ``bad``."""
    import torch.nn.functional as F
    imgs, bad = decode_each(datas, device)
    out = torch.zeros(len(datas), params.shape[1], 3, size, size, dtype=torch.uint8,
                      device=device)
    for n, img in enumerate(imgs):
        if img is None:
            continue
        ps = params[n].tolist()
        if tuple(img.shape[1:]) != (int(ps[0][4]), int(ps[0][5])):
            bad[n] = (f"decodes to {img.shape[1]}x{img.shape[2]} (height x width) but its views "
                      f"were sampled on {int(ps[0][4])}x{int(ps[0][5])}")
            continue
        for k, p in enumerate(ps):
            top, left, ch, cw = (int(v) for v in p[0:4])
            crop = img[:, top:top + ch, left:left + cw].unsqueeze(0).float()
            v = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True,
                              align_corners=False)[0]
            v = v.round_().clamp_(0, 255).to(torch.uint8)
            out[n, k] = v.flip(-1) if p[6] >= 0.5 else v
    return Rendered(out, bad)


def apply_exif_orientation(img: torch.Tensor, orientation: int) -> torch.Tensor:
    """A decoded (C, H, W) image turned as EXIF ``orientation`` (1..8) says, as PIL's
    ``ImageOps.exif_transpose`` turns it (tested against it); other values: unchanged."""
    if orientation == 2:
        return img.flip(-1)
    if orientation == 3:
        return img.flip(-1, -2)
    if orientation == 4:
        return img.flip(-2)
    if orientation == 5:
        return img.transpose(-1, -2)
    if orientation == 6:
        return img.transpose(-1, -2).flip(-1)
    if orientation == 7:
        return img.transpose(-1, -2).flip(-1, -2)
    if orientation == 8:
        return img.transpose(-1, -2).flip(-2)
    return img


def _first_line(e: BaseException) -> str:
    return " ".join(str(e).split())[:160]
