"""SVG rasterisation through the optional ``cairosvg`` package (``pip install
'kdep-cache[svg]'``): at the file's own size, never fetching external resources, with the
same decompression-bomb limit as raster images."""

from __future__ import annotations

import io
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
    data = Path(path).read_bytes()
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
