"""Decoding one image robustly: every mode to 8-bit RGB (transparent pixels composited on a
background colour), EXIF orientation applied, the first frame of animations, SVG through
cairosvg when installed, decompression bombs and truncated JPEGs refused; a failure is a
:class:`BadImage` with its reason, never a crash. The source is a path or a
:class:`~kdep_cache.views.files.Blob` already in memory (a file read once, or a pack's bytes).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..checks import BACKGROUNDS, DEFAULT_BACKGROUND
from .files import ALPHA_MODES, Blob, file_problem, jpeg_too_short, openable, src_name
from .svg import SVG_EXTENSIONS, rasterise

ImageFile.LOAD_TRUNCATED_IMAGES = False  # a short file is an error, never grey blocks
MAX_PIXELS = 89_478_485  # PIL's own default bomb limit; larger declared sizes are refused


class BadImage(Exception):
    """A file that cannot be used as an image; ``str(e)`` is the recorded reason."""


def load_rgb(path: str | os.PathLike,
             background: tuple = BACKGROUNDS[DEFAULT_BACKGROUND], draft: int = 1,
             max_bytes: int | None = None) -> Image.Image:
    """Decode ``path`` (a file, or a :class:`~kdep_cache.views.files.Blob` in memory) to an
    8-bit RGB PIL image, or raise :class:`BadImage` with a reason.
    Transparent pixels are composited onto ``background`` (an RGB triple). ``draft`` = 2, 4
    or 8: a JPEG is decoded at 1/draft of its size in the DCT domain (each side rounded up;
    other formats ignore it: the caller tells them apart by the size it gets)."""
    why = None if isinstance(path, Blob) else file_problem(path, max_bytes)  # before any
    if why is not None:  # open: FIFOs, devices, huge files (a Blob is already in memory)
        raise BadImage(why)
    try:
        if src_name(path).lower().endswith(SVG_EXTENSIONS):
            try:
                return _to_rgb(rasterise(path, MAX_PIXELS), background)
            except ValueError as e:
                raise BadImage(str(e)) from None
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(openable(path)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise BadImage(f"declared size {w}x{h} exceeds the {MAX_PIXELS} pixel limit")
                if w < 1 or h < 1:
                    raise BadImage(f"empty image {w}x{h}")
                if im.format == "JPEG" and (why := jpeg_too_short(path, w, h)):
                    raise BadImage(why)
                im.seek(0)  # first frame of animations
                if draft > 1 and im.format == "JPEG":  # PIL picks the largest scale <= asked
                    im.draft(im.mode, (max(1, w // draft), max(1, h // draft)))
                im.load()
                im = ImageOps.exif_transpose(im)
                return _to_rgb(im, background)
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


def _to_rgb(im: Image.Image, background: tuple = (0, 0, 0)) -> Image.Image:
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
    if im.mode in ALPHA_MODES:
        im = im.convert("RGBA")
        bg = Image.new("RGBA", im.size, (*(int(c) for c in background), 255))
        return Image.alpha_composite(bg, im).convert("RGB")
    return im.convert("RGB")  # L, 1, CMYK, YCbCr, LAB, HSV
