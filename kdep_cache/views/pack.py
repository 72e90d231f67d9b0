"""``extract --pack``: what a packed cache stores of each image, so later stages never read the
image folder (issue 26).

- ``original``: the file's bytes as read (any format the decoders read from memory, SVG too).
- ``jpeg:SIDE[:QUALITY]``: the image decoded as every view decodes it (RGB, EXIF orientation
  applied, transparency composited on the cache's background), its longer side brought to at
  most SIDE px (Lanczos), re-encoded once as a baseline JPEG at QUALITY (default 90, PIL's
  4:2:0 chroma). A JPEG that is already within SIDE, RGB or grey and not EXIF-rotated is kept
  byte for byte (no second generation of loss; the quickstart's 32-px JPEGs stay as they are).
  The orientation is baked in, so nvJPEG (which ignores EXIF) decodes the right image.
- ``none``: no pack; every stage reads the folder (what every cache made before the pack is).

The views of a packed cache are rendered from the packed bytes at extraction, so the stored
crop parameters refer to the packed image and replay from the pack is exact.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import NamedTuple

from PIL import Image

from ..checks.values import PACK_QUALITY, pack_spec
from .files import Blob, openable
from .images import load_rgb
from .svg import SVG_EXTENSIONS

AUTO_SIDE = 320  # --pack auto at a 224-px teacher (measured: benchmarks/results/pack.json)


def packed_name(rel: str, data) -> str:
    """The name a packed image is decoded under: an SVG re-encoded as JPEG (``jpeg:SIDE``) is
    a JPEG, whatever its path says (the decoders pick SVG by the extension)."""
    if rel.lower().endswith(SVG_EXTENSIONS) and bytes(data[:2]) == b"\xff\xd8":
        return rel + ".jpg"
    return rel


class Packed(NamedTuple):
    data: bytes
    name: str     # a name whose extension says the packed format (SVG stays SVG)
    kept: bool    # the file's own bytes (original, or a JPEG already within SIDE)


@dataclass(frozen=True)
class PackSpec:
    mode: str = "none"
    side: int | None = None
    quality: int | None = None

    @classmethod
    def parse(cls, text: str | None) -> "PackSpec":
        return cls(*pack_spec("pack", text or "none"))

    def __str__(self) -> str:
        return self.mode if self.mode != "jpeg" else f"jpeg:{self.side}:{self.quality}"

    @property
    def enabled(self) -> bool:
        return self.mode != "none"

    def resolved(self, image_size: int) -> "PackSpec":
        """``auto`` -> ``jpeg:SIDE:90`` with SIDE = max(320, image_size x 320 / 224): 320 for
        a 224-px teacher (README "Packed caches"), proportionally more for larger inputs."""
        if self.mode != "auto":
            return self
        return PackSpec("jpeg", max(AUTO_SIDE, -(-image_size * AUTO_SIDE // 224)), PACK_QUALITY)

    def pack(self, src: Blob, background: tuple) -> Packed:
        """What the pack stores for ``src`` (raises :class:`BadImage` if it cannot be
        decoded: such an image is skipped, as without a pack)."""
        if self.mode == "original":
            return Packed(bytes(src.data), src.name, True)
        img = load_rgb(src, background)  # the decode every view makes (oriented, composited)
        if _keepable(src, self.side):
            return Packed(bytes(src.data), src.name, True)
        w, h = img.size
        if max(w, h) > self.side:
            s = self.side / max(w, h)
            img = img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)
        buf = io.BytesIO()
        img.save(buf, format="JPEG", quality=self.quality)
        return Packed(buf.getvalue(), src.name + ".jpg", False)


def _keepable(src: Blob, side: int) -> bool:
    """A JPEG within ``side``, RGB or grey, without EXIF rotation: its bytes decode to the
    image a re-encode would start from, so they are kept."""
    try:
        with Image.open(openable(src)) as im:
            return (im.format == "JPEG" and im.mode in ("RGB", "L") and max(im.size) <= side
                    and im.getexif().get(0x0112, 1) in (1, None))
    except Exception:  # noqa: BLE001 - load_rgb decoded it; anything odd: re-encode
        return False

