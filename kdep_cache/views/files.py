"""What a file of an image folder is, around its decode: refused from ``stat`` alone (not a
regular file, empty, too large), a name that is not UTF-8, a JPEG too short for its declared
size, and whether its decode composites transparent pixels on the background (from the
header). Used by :mod:`kdep_cache.views.images` and the datasets; nothing here decodes pixels.
"""

from __future__ import annotations

import io
import os
import stat
from typing import NamedTuple

from PIL import Image

from ..checks import BACKGROUNDS
from .svg import SVG_EXTENSIONS

_KINDS = {stat.S_ISFIFO: "a FIFO", stat.S_ISCHR: "a character device", stat.S_ISBLK:
          "a block device", stat.S_ISSOCK: "a socket", stat.S_ISDIR: "a folder"}


def printable(name: str) -> str:
    """A file name as text that can be printed and written to JSON: bytes that are not
    UTF-8 (kept by Python as surrogates) shown as ``\\xe9``."""
    return os.fsencode(name).decode("utf-8", "backslashreplace")


def utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


NOT_UTF8 = "name is not UTF-8 (rename it to include it)"


def file_problem(path: str | os.PathLike, max_bytes: int | None = None) -> str | None:
    """Why ``path`` must not be opened as an image, from ``stat`` alone (links followed): not
    a regular file (a FIFO would block the reader forever, a link to /dev/zero never ends),
    empty, or larger than ``max_bytes``; None if it may be read."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "file not found (moved, or a broken symlink)"
    except OSError as e:
        return f"cannot stat: {e.strerror or e}"
    if not stat.S_ISREG(st.st_mode):
        kind = next((k for test, k in _KINDS.items() if test(st.st_mode)), "a special file")
        return f"not a regular file ({kind})"
    if st.st_size == 0:
        return "zero-byte file"
    if max_bytes is not None and st.st_size > max_bytes:
        return (f"file of {st.st_size / 2**20:.0f} MiB exceeds --max-file-mb "
                f"{max_bytes / 2**20:g}")
    return None


class Blob(NamedTuple):
    """An image's bytes already in memory (read once from its file, or from a cache's pack),
    with its relative path (the name says the format, e.g. SVG). The decoders take a
    :class:`Blob` wherever they take a path, and then never open a file."""

    data: bytes
    name: str


def blob_len(src) -> int:
    return len(src.data) if isinstance(src, Blob) else os.path.getsize(src)


def blob_bytes(src) -> bytes:
    if isinstance(src, Blob):
        return bytes(src.data)
    with open(src, "rb") as f:
        return f.read()


def openable(src):
    """What :func:`PIL.Image.open` takes for ``src`` (a path or a :class:`Blob`)."""
    return io.BytesIO(src.data) if isinstance(src, Blob) else src


def src_name(src) -> str:
    return src.name if isinstance(src, Blob) else str(src)


_ARITHMETIC_SOF = tuple(bytes([0xFF, m]) for m in (0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF))


def jpeg_too_short(path, w: int, h: int) -> str | None:
    """Why a JPEG is truncated when its file is too short to hold the size its header declares. libjpeg
    fills missing blocks without an error when the data end early at an EOI marker (PIL's
    truncation check sees only a missing EOI), so a 9000x9000 header over 32x32 of data would
    decode to a flat image. Each 8x8 block of the full-resolution component costs at least
    one Huffman-coded bit (its DC difference), hence at least ceil(w/8)*ceil(h/8)/8 bytes;
    arithmetic-coded JPEGs (rare) can go below one bit a block and are not checked."""
    blocks = -(-w // 8) * -(-h // 8)
    size = blob_len(path)
    if size * 8 >= blocks:
        return None
    data = blob_bytes(path)
    if any(m in data for m in _ARITHMETIC_SOF):
        return None
    return (f"truncated JPEG: the header declares {w}x{h} ({blocks} blocks, at least "
                   f"{-(-blocks // 8)} bytes of data) but the file holds {size} bytes")


ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")


def composited(path: str | os.PathLike) -> bool:
    """Whether decoding ``path`` composites it on the background (from the header): an alpha
    channel, a palette with a transparent entry, or an SVG (rasterised with alpha)."""
    if str(path).lower().endswith(SVG_EXTENSIONS):
        return True
    if file_problem(path) is not None:  # never open a FIFO or a device
        return False
    try:
        with Image.open(path) as im:
            return im.mode in ALPHA_MODES or (im.mode == "P" and "transparency" in im.info)
    except Exception:  # noqa: BLE001 - unreadable: it was skipped
        return False


def count_composited(images, skipped_ids) -> int:
    """Images of ``images`` (less ``skipped_ids``) composited on the background."""
    skip = set(skipped_ids)
    return sum(composited(os.path.join(images.root, p)) for i, p in enumerate(images.paths)
               if i not in skip)


def composited_line(scan: dict) -> str:
    """``3 images with transparency composited on gray (128,128,128)``."""
    n, rgb = scan.get("composited"), tuple(scan.get("background") or ())
    if n is None:
        return "not counted"
    name = next((k for k, v in BACKGROUNDS.items() if v == rgb), None)
    where = f"{name} ({','.join(map(str, rgb))})" if name else ",".join(map(str, rgb))
    return f"{n} image{'s' if n != 1 else ''} with transparency composited on {where}"
