"""SVG rasterisation through the optional ``cairosvg`` package (``pip install
'kdep-cache[svg]'``): at the file's own size, never fetching external resources, with the
same decompression-bomb limit as raster images."""

from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image

SVG_EXTENSIONS = (".svg",)
SVG_HINT = "pip install 'kdep-cache[svg]' (cairosvg) to include them"


def svg_supported() -> bool:
    """Whether SVG files are rasterised (cairosvg importable, with its libcairo)."""
    try:
        import cairosvg  # noqa: F401
    except (ImportError, OSError):  # OSError: cairosvg installed but libcairo missing
        return False
    return True


def rasterise(path, max_pixels: int) -> Image.Image:
    """An RGBA image of the SVG at ``path``; ``ValueError(reason)`` if it cannot be used."""
    try:
        import cairosvg
        from cairosvg.helpers import node_format
        from cairosvg.parser import Tree
    except (ImportError, OSError):
        raise ValueError(f"SVG needs the optional cairosvg package: {SVG_HINT}") from None
    data = path.data if hasattr(path, "data") else Path(path).read_bytes()  # a Blob
    if b"<!ENTITY" in data:  # Illustrator & co. declare internal entities (#23.18)
        data = expand_entities(data)
    try:  # the declared size first (units resolved at 96 dpi), so a bomb is never allocated
        units = type("Units", (), {"dpi": 96, "font_size": 16, "context_width": 0,
                                   "context_height": 0})()
        w, h, _ = node_format(units, Tree(bytestring=data, unsafe=False))
    except Exception as e:  # noqa: BLE001 - any parse failure is an unusable file
        raise ValueError(f"unreadable SVG: {type(e).__name__}: {e}") from None
    if w * h > max_pixels:
        raise ValueError(f"declared size {w:.0f}x{h:.0f} exceeds the {max_pixels} pixel limit")
    try:
        png = cairosvg.svg2png(bytestring=data, unsafe=False)  # unsafe=False: data: URLs only
    except Exception as e:  # noqa: BLE001
        raise ValueError(f"unreadable SVG: {type(e).__name__}: {e}") from None
    with Image.open(io.BytesIO(png)) as im:
        im.load()
        return im.convert("RGBA")


EXTERNAL = "refused: external entity"
EXPANSION = "refused: entity expansion"
_EXTERNAL_DECL = re.compile(rb"<!ENTITY\s+(%\s*)?[^\s>]+\s+(SYSTEM|PUBLIC)\b")
_NAMESPACES = {"": "http://www.w3.org/2000/svg", "xlink": "http://www.w3.org/1999/xlink"}


def expand_entities(data: bytes, max_factor: int = 100, min_limit: int = 2**23) -> bytes:
    """The SVG ``data`` with its internal entities expanded and its DOCTYPE dropped, for
    cairosvg's safe parser (which refuses every entity declaration). ``ValueError`` with
    :data:`EXTERNAL` for an entity that names a file or URL (declared, even if unused), with
    :data:`EXPANSION` when the expanded document would exceed ``max_factor`` x its size
    (at least ``min_limit`` bytes; expat >= 2.4 stops "billion laughs" the same way)."""
    import xml.etree.ElementTree as ET

    from defusedxml import DefusedXmlException
    from defusedxml import ElementTree as DET
    if _EXTERNAL_DECL.search(data):
        raise ValueError(EXTERNAL)
    try:
        root = DET.fromstring(data, forbid_dtd=False, forbid_entities=False,
                              forbid_external=True)
    except DefusedXmlException as e:
        raise ValueError(EXTERNAL if "External" in type(e).__name__ else
                         f"refused: {type(e).__name__}") from None
    except ET.ParseError as e:
        if "amplification" in str(e):
            raise ValueError(EXPANSION) from None
        raise ValueError(f"unreadable SVG: ParseError: {e}") from None
    for prefix, uri in _NAMESPACES.items():
        ET.register_namespace(prefix, uri)
    out = ET.tostring(root, encoding="utf-8")
    if len(out) > max(max_factor * len(data), min_limit):
        raise ValueError(EXPANSION)
    return out
