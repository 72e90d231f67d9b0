"""Image discovery and robust decoding.

An :class:`ImageList` is the sorted list of relative paths under a root (ids = positions),
optional class labels from the first folder level, and a fingerprint. Decoding converts every
mode to RGB, applies EXIF orientation, takes the first frame of animations and refuses
decompression bombs; failures become a :class:`BadImage` with a reason, never a crash.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageFile, ImageOps

from .errors import InputError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")
MAX_PIXELS = 89_478_485  # PIL's own default bomb limit; larger declared sizes are refused
ImageFile.LOAD_TRUNCATED_IMAGES = False


class BadImage(Exception):
    """A file that cannot be used as an image; ``str(e)`` is the recorded reason."""


@dataclass
class ImageList:
    root: str
    paths: list[str]
    labels: list[int] = field(default_factory=list)  # -1 where unlabeled
    classes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256("\n".join(self.paths).encode()).hexdigest()

    def to_json(self) -> dict:
        return {"root": self.root, "paths": self.paths, "labels": self.labels,
                "classes": self.classes, "fingerprint": self.fingerprint}

    @classmethod
    def from_json(cls, d: dict, root: str | None = None) -> "ImageList":
        return cls(root or d["root"], list(d["paths"]), list(d["labels"]), list(d["classes"]))


def scan_images(root: str | os.PathLike, file_list: str | os.PathLike | None = None,
                fraction: float | None = None, seed: int = 0) -> ImageList:
    """List images under ``root`` (sorted relative POSIX paths, recursive, no symlinked dirs)."""
    rootp = Path(root)
    if not rootp.is_dir():
        raise InputError(f"image folder {root} does not exist or is not a directory")
    if file_list is not None:
        try:
            lines = Path(file_list).read_text().splitlines()
        except OSError as e:
            raise InputError(f"cannot read --file-list {file_list}: {e.strerror}") from None
        paths = sorted({ln.strip() for ln in lines if ln.strip() and not ln.startswith("#")})
        bad = [p for p in paths if os.path.isabs(p) or ".." in Path(p).parts]
        if bad:
            raise InputError(f"--file-list must hold paths relative to {root}; got {bad[0]!r}")
        missing = [p for p in paths if not (rootp / p).exists()]
        if missing:
            raise InputError(f"{len(missing)} files of --file-list are not under {root}, "
                             f"e.g. {missing[:3]}")
    else:
        paths = []
        for dirpath, dirnames, filenames in os.walk(rootp, followlinks=False):
            dirnames.sort()
            rel = Path(dirpath).relative_to(rootp)
            for fn in filenames:
                if fn.lower().endswith(IMAGE_EXTENSIONS) and not fn.startswith("."):
                    paths.append((rel / fn).as_posix())
        paths.sort()
    if not paths:
        raise InputError(f"no images ({', '.join(IMAGE_EXTENSIONS)}) found under {root}")
    # class = first folder level; files at the top level of a class tree stay unlabeled (-1)
    classes = sorted({p.split("/")[0] for p in paths if "/" in p})
    cidx = {c: i for i, c in enumerate(classes)}
    labels = [cidx[p.split("/")[0]] if "/" in p else -1 for p in paths]
    il = ImageList(str(rootp.resolve()), paths, labels, classes)
    if fraction is not None:
        il = class_balanced_subset(il, fraction, seed)
    return il


def class_balanced_subset(il: ImageList, fraction: float, seed: int) -> ImageList:
    """Take ``round(fraction * n_c)`` images of every class c (or of all images), seeded."""
    if not 0 < fraction <= 1:
        raise InputError(f"--fraction must be in (0, 1], got {fraction}")
    labels = np.asarray(il.labels)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * len(idx))))
        keep.extend(rng.choice(idx, size=k, replace=False).tolist())
    keep.sort()
    return ImageList(il.root, [il.paths[i] for i in keep], [il.labels[i] for i in keep],
                     il.classes)


def load_rgb(path: str | os.PathLike) -> Image.Image:
    """Decode ``path`` to an 8-bit RGB PIL image, or raise :class:`BadImage` with a reason."""
    try:
        if os.path.getsize(path) == 0:
            raise BadImage("zero-byte file")
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(path) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"declared size {w}x{h} exceeds the {MAX_PIXELS} pixel limit")
                if w < 1 or h < 1:
                    raise BadImage(f"empty image {w}x{h}")
                im.seek(0)  # first frame of animations
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im)
    except BadImage:
        raise
    except Image.DecompressionBombError as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except Image.DecompressionBombWarning as e:
        raise BadImage(f"decompression bomb: {e}") from None
    except FileNotFoundError:
        raise BadImage("file not found (moved, or a broken symlink)") from None
    except PermissionError:
        raise BadImage("permission denied") from None
    except OSError as e:
        reason = e.strerror or str(e) or type(e).__name__
        raise BadImage(f"unreadable image: {reason}") from None
    except (ValueError, SyntaxError, EOFError, MemoryError) as e:
        raise BadImage(f"unreadable image: {type(e).__name__}: {e}") from None


def _to_rgb(im: Image.Image) -> Image.Image:
    if im.mode == "RGB":
        return im.copy()
    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        a = np.asarray(im, dtype=np.float64)
        hi = 65535.0 if im.mode.startswith("I;16") or a.max() > 255 else 255.0
        a8 = np.clip(np.round(a * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if im.mode == "F":
        a = np.asarray(im, dtype=np.float64)
        a8 = np.clip(np.round(a if a.max() > 1.0 else a * 255.0), 0, 255).astype(np.uint8)
        return Image.fromarray(a8, "L").convert("RGB")
    if im.mode == "P":
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (0, 0, 0, 255))  # transparent pixels become black
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
