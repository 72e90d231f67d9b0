"""Messy folders and transparency: what the scan leaves out is counted by extension and
listed with -v, unlistable folders are recorded, SVG is rasterised (cairosvg) or named in a
hint, and alpha is composited on --background, identically at extract and at replay."""

from __future__ import annotations

import io
import json
import logging
import os
import struct
import wave

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from conftest import extract_cfg
from PIL import Image

import kdep_cache.extract.run as extract_mod
import kdep_cache.extract.shard as shard_mod
import kdep_cache.views.images as images_mod
from kdep_cache.cache.schema import RAW
from kdep_cache.cache.store import Store
from kdep_cache.cli import main
from kdep_cache.errors import InputError
from kdep_cache.models.registry import NORMALIZATIONS
from kdep_cache.views.augment import AugmentSpec
from kdep_cache.views.datasets import render_views
from kdep_cache.views.images import BadImage, ImageList, load_rgb, scan_images
from kdep_cache.views.svg import svg_supported

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="40" height="30">'
       '<rect x="10" y="5" width="20" height="20" fill="#ff0000"/></svg>')


def _wav(path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(struct.pack("<h", int(1000 * np.sin(i / 5))) for i in range(800)))


def _rgba(path, size=(40, 30)) -> np.ndarray:
    """A gradient with an alpha ramp: fully transparent left column, opaque right column."""
    w, h = size
    a = np.zeros((h, w, 4), np.uint8)
    a[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
    a[..., 1] = 40
    a[..., 2] = np.linspace(255, 0, h, dtype=np.uint8)[:, None]
    a[..., 3] = np.linspace(0, 255, w).round().astype(np.uint8)[None, :]
    Image.fromarray(a, "RGBA").save(path)
    return a


@pytest.fixture()
def messy(tmp_path):
    """A tree like a real download: PNG, JPEG, SVG, text, sound and data files."""
    d = tmp_path / "messy"
    (d / "a").mkdir(parents=True)
    (d / "b" / "deep").mkdir(parents=True)
    Image.new("RGB", (36, 36), (200, 30, 30)).save(d / "a" / "red.jpg")
    _rgba(d / "a" / "cutout.png")
    Image.new("RGB", (36, 36), (30, 30, 200)).save(d / "b" / "blue.png")
    (d / "b" / "icon.svg").write_text(SVG)
    (d / "b" / "deep" / "logo.SVG").write_text(SVG)
    (d / "a" / "README.txt").write_text("hello")
    (d / "b" / "notes.txt").write_text("more")
    _wav(d / "b" / "deep" / "beep.wav")
    (d / "b" / "data.csv").write_text("x,y\n1,2\n")
    (d / "b" / "Makefile").write_text("all:\n")
    (d / "a" / ".DS_Store").write_bytes(b"\0")
    return d


@pytest.mark.skipif(not svg_supported(), reason="cairosvg not installed")
def test_mixed_folder_counts_what_it_ignores_and_rasterises_svg(messy):
    il = scan_images(messy)
    assert il.paths == ["a/cutout.png", "a/red.jpg", "b/blue.png", "b/deep/logo.SVG",
                        "b/icon.svg"]
    assert il.ignored == {".txt": 2, ".wav": 1, ".csv": 1, "(no extension)": 1, "(hidden)": 1}
    assert il.ignored_files == ["a/.DS_Store", "a/README.txt", "b/Makefile", "b/data.csv",
                                "b/deep/beep.wav", "b/notes.txt"]
    assert il.scan_summary().startswith("6 files ignored (.txt 2, (hidden) 1, (no extension) 1,"
                                        " .csv 1, .wav 1; -v lists them)")
    im = load_rgb(messy / "b" / "icon.svg", (0, 255, 0))
    assert im.size == (40, 30) and im.mode == "RGB"
    assert im.getpixel((20, 15)) == (255, 0, 0) and im.getpixel((2, 2)) == (0, 255, 0)


def test_without_cairosvg_svgs_are_ignored_with_the_hint(messy, monkeypatch):
    monkeypatch.setattr(images_mod, "svg_supported", lambda: False)
    il = scan_images(messy)
    assert il.paths == ["a/cutout.png", "a/red.jpg", "b/blue.png"]
    assert il.ignored[".svg"] == 2
    assert "SVG: pip install 'kdep-cache[svg]'" in il.scan_summary()
    assert "2 SVG files ignored" in il.scan_record()["note"]
    only_svg = messy / "b" / "deep"
    (only_svg / "beep.wav").unlink()
    with pytest.raises(InputError, match=r"no images .* found .*1 files ignored \(\.svg 1"):
        scan_images(only_svg)


def test_unlistable_folder_is_recorded_not_dropped(messy, monkeypatch):
    real = os.scandir

    def scandir(path="."):
        if str(path).endswith(os.sep + "deep"):
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    il = scan_images(messy)
    assert il.skipped_dirs == [{"path": "b/deep", "reason": "cannot list: Permission denied"}]
    assert "1 folders not scanned (e.g. b/deep: cannot list: Permission denied)" in \
        il.scan_summary()
    os.symlink(messy / "a", messy / "b" / "link")
    assert {"path": "b/link", "reason": "symlinked folder, not followed"} in \
        scan_images(messy).skipped_dirs


def test_scan_record_reaches_images_json_and_v_lists_files(messy, tmp_path, teacher_file,
                                                          caplog):
    with caplog.at_level(logging.DEBUG, logger="kdep_cache"):
        extract_mod.extract(extract_cfg(messy, tmp_path / "c", teacher_file, shard_size=50))
    il = ImageList.from_json(json.loads((tmp_path / "c" / "images.json").read_text()))
    assert il.ignored[".wav"] == 1 and "b/deep/beep.wav" in il.ignored_files
    listed = [r.getMessage() for r in caplog.records if r.levelno == logging.DEBUG]
    assert "ignored (not an image extension): b/deep/beep.wav" in listed
    # -v turns kdep-cache's DEBUG lines on (and only -vv those of every other library)
    from kdep_cache.cli.base import configure_logging
    configure_logging(1, False)
    assert logging.getLogger("kdep_cache").level == logging.DEBUG
    assert logging.getLogger().level == logging.WARNING
    configure_logging(0, False)
    assert logging.getLogger("kdep_cache").level == logging.INFO


@pytest.mark.parametrize("bg", [(0, 0, 0), (255, 255, 255), (128, 128, 128), (10, 200, 30)])
def test_alpha_is_composited_on_the_background(tmp_path, bg):
    a = _rgba(tmp_path / "x.png").astype(np.float64)
    got = np.asarray(load_rgb(tmp_path / "x.png", bg), dtype=np.float64)
    alpha = a[..., 3:] / 255
    want = a[..., :3] * alpha + np.array(bg, np.float64) * (1 - alpha)  # "over", by hand
    assert np.abs(got - want).max() <= 1.0
    assert tuple(got[0, 0].astype(int)) == bg  # the fully transparent column
    la = Image.fromarray(a[..., [0, 3]].astype(np.uint8), "LA")  # grey + alpha, same rule
    la.save(tmp_path / "la.png")
    g = np.asarray(load_rgb(tmp_path / "la.png", bg), dtype=np.float64)
    want = a[..., :1] * alpha + np.array(bg, np.float64) * (1 - alpha)
    assert np.abs(g - want).max() <= 1.0


def test_background_spec_json_and_old_caches_read_as_black():
    assert AugmentSpec().background == (128, 128, 128)  # the measured default
    assert AugmentSpec().to_json()["background"] == [128, 128, 128]
    assert "background" not in AugmentSpec(background=(0, 0, 0)).to_json()  # = old specs
    old = AugmentSpec().to_json()
    del old["background"]
    assert AugmentSpec.from_json(old).background == (0, 0, 0)
    white = AugmentSpec(background=(255, 255, 255))
    assert AugmentSpec.from_json(json.loads(json.dumps(white.to_json()))) == white


def test_background_recorded_and_replayed_identically(tmp_path, teacher_file, monkeypatch):
    d = tmp_path / "imgs"
    d.mkdir()
    for i in range(3):
        _rgba(d / f"c{i}.png", (40 + 4 * i, 30))
    seen = []
    real = shard_mod._forward_chunks

    def capture(teacher, x, cfg, device, precision):
        seen.append(x.clone())
        return real(teacher, x, cfg, device, precision)

    monkeypatch.setattr(shard_mod, "_forward_chunks", capture)
    r = CliRunner().invoke(main, ["extract", "--data", d, "--teacher", "resnet18",
                                  "--teacher-weights", teacher_file, "--out", tmp_path / "c",
                                  "--views", "2", "--image-size", "32", "--workers", "0",
                                  "--batch-size", "8", "--device", "cpu", "--pack", "none",
                                  "--background", "255,255,255"])
    assert r.exit_code == 0, r.output
    st = Store(tmp_path / "c", RAW)
    spec = AugmentSpec.from_json(st.manifest["settings"]["augment"])
    assert spec.background == (255, 255, 255)
    x = torch.cat(seen).reshape(3, 2, 3, 32, 32)  # images x views, extract order
    il = ImageList.from_json(json.loads((tmp_path / "c" / "images.json").read_text()))
    mean, std = NORMALIZATIONS["imagenet"]
    for v in range(2):
        params = st.read("params", np.arange(3), view=v)
        for i in range(3):
            views = render_views(il, i, [v], 32, mean, std, spec, 0, params[i:i + 1]).views
            assert torch.equal(views[0], x[i, v])  # bitwise: the tensor the teacher saw
            black = AugmentSpec.from_json({**spec.to_json(), "background": [0, 0, 0]})
            other = render_views(il, i, [v], 32, mean, std, black, 0, params[i:i + 1]).views
            assert not torch.equal(other[0], x[i, v])  # and the background mattered


def test_svg_bomb_and_garbage_are_bad_images(tmp_path):
    if not svg_supported():
        pytest.skip("cairosvg not installed")
    (tmp_path / "bomb.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" '
                                       'width="30000" height="30000"/>')
    (tmp_path / "junk.svg").write_bytes(b"<svg <<< not xml")
    with pytest.raises(images_mod.BadImage, match="exceeds"):
        load_rgb(tmp_path / "bomb.svg")
    with pytest.raises(images_mod.BadImage, match="unreadable SVG"):
        load_rgb(tmp_path / "junk.svg")
    ext = ('<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
           'width="8" height="8"><image xlink:href="http://example.invalid/x.png" '
           'width="8" height="8"/></svg>')
    (tmp_path / "ext.svg").write_text(ext)
    assert load_rgb(tmp_path / "ext.svg").size == (8, 8)  # nothing fetched (unsafe=False)


def test_palette_transparency_follows_the_background(tmp_path):
    pal = Image.new("P", (4, 4), 0)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pal.putpixel((1, 1), 1)
    buf = io.BytesIO()
    pal.save(buf, format="PNG", transparency=0)
    (tmp_path / "p.png").write_bytes(buf.getvalue())
    im = load_rgb(tmp_path / "p.png", (255, 255, 255))
    assert im.getpixel((0, 0)) == (255, 255, 255) and im.getpixel((1, 1)) == (255, 0, 0)


def test_transparent_images_are_counted_in_the_summary_and_manifest(tmp_path, teacher_file):
    """#23.19: images composited on --background are counted, not silently changed."""
    from conftest import HERE

    from kdep_cache.extract.run import extract
    d = tmp_path / "imgs"
    d.mkdir()
    for f in sorted((HERE / "data" / "cifar" / "cat").iterdir())[:2]:
        (d / f.name).write_bytes(f.read_bytes())
    Image.new("RGBA", (24, 20), (255, 0, 0, 100)).save(d / "alpha.png")
    pal = Image.new("P", (24, 20), 1)
    pal.putpalette([0, 255, 0, 255, 0, 0] + [0] * 762)
    pal.save(d / "keyed.png", transparency=0)
    Image.new("RGB", (24, 20), (1, 2, 3)).save(d / "opaque.png")
    Image.new("LA", (24, 20), (9, 0)).save(d / "gray_alpha.png")
    r = extract(extract_cfg(d, tmp_path / "c", teacher_file, views=1,
                            augment=AugmentSpec(background=(255, 255, 255))))
    assert r["transparent"] == "3 images with transparency composited on white (255,255,255)"
    scan = Store(tmp_path / "c", RAW).manifest["scan"]
    assert scan["composited"] == 3 and scan["background"] == [255, 255, 255]


AI_SVG = b"""<?xml version="1.0" encoding="utf-8"?>
<!-- Generator: Adobe Illustrator 24.0.0, SVG Export Plug-In  -->
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd" [
\t<!ENTITY ns_svg "http://www.w3.org/2000/svg">
\t<!ENTITY ns_xlink "http://www.w3.org/1999/xlink">
\t<!ENTITY st0 "fill:#FF0000;">
]>
<svg version="1.1" xmlns="&ns_svg;" xmlns:xlink="&ns_xlink;" width="40" height="30">
<rect x="10" y="5" width="20" height="20" style="&st0;"/></svg>
"""
LAUGHS = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY a0 "xxxxxxxxxx">'
          + b"".join(b'<!ENTITY a%d "%s">' % (i, b"&a%d;" % (i - 1) * 10) for i in range(1, 10))
          + b']><svg xmlns="http://www.w3.org/2000/svg" width="4" height="4">'
          + b"<text>&a9;</text></svg>")
EXTERNAL = (b'<?xml version="1.0"?><!DOCTYPE svg [<!ENTITY x SYSTEM "file:///etc/hostname">]>'
            b'<svg xmlns="http://www.w3.org/2000/svg" width="4" height="4"><text>&x;</text>'
            b"</svg>")


@pytest.mark.skipif(not svg_supported(), reason="cairosvg not installed")
def test_svg_internal_entities_are_expanded_external_and_bombs_refused(tmp_path):
    """#23.18: Illustrator's internal entities render; external entities and expansion bombs
    are refused with the reason named, not as "unreadable"."""
    (tmp_path / "ai.svg").write_bytes(AI_SVG)
    im = load_rgb(tmp_path / "ai.svg", (0, 255, 0))
    assert im.size == (40, 30) and im.getpixel((20, 15)) == (255, 0, 0)
    assert im.getpixel((2, 2)) == (0, 255, 0)  # transparent: the background
    for name, data, why in (("laughs.svg", LAUGHS, "refused: entity expansion"),
                            ("ext.svg", EXTERNAL, "refused: external entity"),
                            ("unused_ext.svg", EXTERNAL.replace(b"&x;", b""),
                             "refused: external entity")):
        (tmp_path / name).write_bytes(data)
        with pytest.raises(BadImage, match=f"^{why}$"):
            load_rgb(tmp_path / name)
