"""Replayable augmentations: sample parameters as a pure function, apply them separately.

The parameters of view ``v`` of image ``i`` come from ``np.random.default_rng([seed, v, i])``
and the image's size only: never from worker id, batch size or iteration order. They are
stored with the teacher features, and :func:`render` rebuilds the exact input tensor from
them, at the extraction size or at any other size (same crop box on the source image).

Default = the paper's recipe: RandomResizedCrop(scale 0.08-1, ratio 3/4-4/3) + horizontal
flip + ColorJitter(0.1, 0.1, 0.1) (random order) + AlexNet PCA lighting (std 0.05).

Replay is split in two: :func:`crop_resize` (CPU, in the loader workers) decodes-side work
to uint8 at the output size, and :mod:`kdep_cache.views.photometric` applies the jitter, lighting
and normalization to a whole batch on the training device. :func:`render` is the original
one-image float32 render (the reference the split is tested against, bitwise).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image

from ..checks import BACKGROUNDS, DEFAULT_BACKGROUND
from ..errors import ArtifactError
from ..names import RENDER_DRAFT, RENDER_FULL, RENDER_METHODS

PARAM_FIELDS = ("top", "left", "height", "width", "src_h", "src_w", "flip",
                "brightness", "contrast", "saturation", "jitter_order",
                "light_a0", "light_a1", "light_a2")
N_PARAMS = len(PARAM_FIELDS)
_ORDERS = list(itertools.permutations(range(3)))  # brightness, contrast, saturation
# AlexNet / fb.resnet.torch ImageNet RGB PCA (eigenvalues, eigenvectors as columns).
_EIGVAL = torch.tensor([0.2175, 0.0188, 0.0045], dtype=torch.float32)
_EIGVEC = torch.tensor([[-0.5675, 0.7192, 0.4009],
                        [-0.5808, -0.0045, -0.8140],
                        [-0.5836, -0.6948, 0.4203]], dtype=torch.float32)


@dataclass(frozen=True)
class AugmentSpec:
    """How views are sampled. ``kind='center'`` gives deterministic centre crops."""

    kind: str = "rrc"              # "rrc" (paper) or "center"
    scale: tuple = (0.08, 1.0)     # RandomResizedCrop area range (paper: 0.08-1)
    ratio: tuple = (3 / 4, 4 / 3)
    flip: bool = True
    jitter: float = 0.1            # brightness = contrast = saturation strength (paper: 0.1)
    lighting: float = 0.05         # PCA lighting alpha std (paper: 0.05)
    center_crop: float = 0.875     # side fraction of the centre crop (224/256)
    center_view0: bool = False     # make view 0 of every image the centre crop
    # RGB under transparent pixels (alpha images, SVG); the default is measured in
    # benchmarks/results/background.json. Caches made before the option composited on black.
    background: tuple = BACKGROUNDS[DEFAULT_BACKGROUND]
    # how pixels are made (names.RENDER_METHODS); caches written before the key: full decode
    render: str = RENDER_DRAFT

    def to_json(self) -> dict:
        d = asdict(self)
        d["scale"], d["ratio"] = list(self.scale), list(self.ratio)
        d["background"] = [int(c) for c in self.background]
        if d["background"] == [0, 0, 0]:  # black: specs written before the option read so
            del d["background"]
        if d["render"] == RENDER_FULL:  # full decode: specs written before the key read so
            del d["render"]
        return d

    @classmethod
    def from_json(cls, d: dict) -> "AugmentSpec":
        d = {"background": (0, 0, 0), "render": RENDER_FULL, **d}  # old caches: no keys
        if d["render"] not in RENDER_METHODS:
            raise ArtifactError(f"the views were rendered by method {d['render']!r}, which this "
                                f"kdep-cache does not know ({', '.join(RENDER_METHODS)}): "
                                "upgrade kdep-cache or re-extract")
        d["scale"], d["ratio"] = tuple(d["scale"]), tuple(d["ratio"])
        d["background"] = tuple(int(c) for c in d["background"])
        return cls(**d)


def _center_box(h: int, w: int, frac: float) -> tuple[int, int, int, int]:
    side = max(1, int(round(min(h, w) * frac)))
    return (h - side) // 2, (w - side) // 2, side, side


def sample_params(spec: AugmentSpec, seed: int, view: int, image_id: int,
                  h: int, w: int) -> np.ndarray:
    """Parameters of one view as a float64 vector laid out as :data:`PARAM_FIELDS`."""
    rng = np.random.default_rng([seed, view, image_id])
    p = np.zeros(N_PARAMS, dtype=np.float64)
    p[4], p[5] = h, w
    p[7:10] = 1.0
    if spec.kind == "center" or (spec.center_view0 and view == 0):
        p[0:4] = _center_box(h, w, spec.center_crop)
        return p
    if spec.kind != "rrc":
        raise ValueError(f"unknown augmentation kind {spec.kind!r}")
    p[0:4] = _rrc_box(rng, h, w, spec.scale, spec.ratio)
    p[6] = float(spec.flip and rng.random() < 0.5)
    if spec.jitter > 0:
        p[7:10] = rng.uniform(1 - spec.jitter, 1 + spec.jitter, size=3)
        p[10] = rng.integers(0, len(_ORDERS))
    if spec.lighting > 0:
        p[11:14] = rng.normal(0.0, spec.lighting, size=3)
    return p


def _rrc_box(rng, h, w, scale, ratio):
    """torchvision's RandomResizedCrop.get_params algorithm, drawn from ``rng``."""
    area = h * w
    log_r = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target = area * rng.uniform(scale[0], scale[1])
        ar = math.exp(rng.uniform(*log_r))
        cw = int(round(math.sqrt(target * ar)))
        ch = int(round(math.sqrt(target / ar)))
        if 0 < cw <= w and 0 < ch <= h:
            return rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1), ch, cw
    in_ratio = w / h  # fallback: whole-image centre crop clipped to the ratio range
    if in_ratio < min(ratio):
        cw, ch = w, int(round(w / min(ratio)))
    elif in_ratio > max(ratio):
        ch, cw = h, int(round(h * max(ratio)))
    else:
        cw, ch = w, h
    return (h - ch) // 2, (w - cw) // 2, ch, cw


def render(img: Image.Image, p: np.ndarray, size: int) -> torch.Tensor:
    """Apply stored parameters ``p`` to an RGB image; float32 CHW in [0, 1] (+ lighting)."""
    top, left, ch, cw = (int(v) for v in p[0:4])
    if img.size != (int(p[5]), int(p[4])):
        raise ValueError(f"image is {img.size[0]}x{img.size[1]} but the view was sampled on "
                         f"{int(p[5])}x{int(p[4])}: the image changed since extraction")
    out = img.resize((size, size), Image.BILINEAR, box=(left, top, left + cw, top + ch))
    if p[6] >= 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    x = torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)
    x = x.to(torch.float32).div_(255.0)
    if not np.all(p[7:10] == 1.0):
        for k in _ORDERS[int(p[10])]:
            x = _JITTER[k](x, float(p[7 + k]))
    if np.any(p[11:14] != 0.0):
        alpha = torch.from_numpy(p[11:14].astype(np.float32))
        x = x + (_EIGVEC @ (alpha * _EIGVAL)).view(3, 1, 1)
    return x


def draft_factor(p: np.ndarray, size: int) -> int:
    """JPEG draft reduction (1, 2, 4 or 8) for a view: the largest that still leaves the
    crop box at least ``size`` pixels on each side (never upsampling); a pure function of the
    stored box and the output size, so extract and replay make the same decision."""
    side = min(int(p[2]), int(p[3]))
    return next((r for r in (8, 4, 2) if side >= r * size), 1)


def crop_resize(img: Image.Image, p: np.ndarray, size: int, reduce: int = 1) -> torch.Tensor:
    """The CPU part of replay: crop box + bilinear resize + flip -> uint8 CHW at ``size``.
    ``img`` is the image decoded at 1/``reduce`` of its size (JPEG draft); the stored box,
    in full-resolution pixels, is scaled to it."""
    top, left, ch, cw = (int(v) for v in p[0:4])
    h, w = int(p[4]), int(p[5])
    if img.size != (-(-w // reduce), -(-h // reduce)):
        raise ValueError(f"image is {img.size[0]}x{img.size[1]} (1/{reduce}) but the view was "
                         f"sampled on {w}x{h}: the image changed since extraction")
    r = reduce
    box = (left, top, left + cw, top + ch) if r == 1 else (left / r, top / r,
                                                            (left + cw) / r, (top + ch) / r)
    out = img.resize((size, size), Image.BILINEAR, box=box)
    if p[6] >= 0.5:
        out = out.transpose(Image.FLIP_LEFT_RIGHT)
    return torch.from_numpy(np.asarray(out, dtype=np.uint8).copy()).permute(2, 0, 1)


def _gray(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]).unsqueeze(0)


def _brightness(x, f):
    return (x * f).clamp_(0.0, 1.0)


def _contrast(x, f):
    m = _gray(x).mean()
    return (f * x + (1.0 - f) * m).clamp_(0.0, 1.0)


def _saturation(x, f):
    return (f * x + (1.0 - f) * _gray(x)).clamp_(0.0, 1.0)


_JITTER = (_brightness, _contrast, _saturation)


def normalize(x: torch.Tensor, mean, std) -> torch.Tensor:
    m = torch.as_tensor(mean, dtype=x.dtype).view(-1, 1, 1)
    s = torch.as_tensor(std, dtype=x.dtype).view(-1, 1, 1)
    return (x - m) / s
