"""extract --pack (issue 26): the images inside the cache, views rendered from the packed bytes,
later stages never reading the folder; the unpacked path hashing each file once per run."""

from __future__ import annotations

import builtins
import io
import json
import os
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
from conftest import HERE, extract_cfg, interrupt_after_epoch_1
from PIL import Image, ImageOps

from kdep_cache.cache import RAW, Store
from kdep_cache.errors import ArtifactError, InputError, LineageError
from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd
from kdep_cache.models import load_teacher
from kdep_cache.train.feed import Feed
from kdep_cache.train.sources import open_source
from kdep_cache.train.student import TrainConfig, train_student
from kdep_cache.views import readers
from kdep_cache.views.augment import crop_resize
from kdep_cache.views.files import Blob
from kdep_cache.views.pack import PackSpec
from kdep_cache.views.photometric import finish


def _photo(w: int, h: int, seed: int) -> Image.Image:
    """A smooth image with detail (gradients + a few blocks): JPEG-friendly, not flat."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([(xx * 255 // max(1, w - 1)), (yy * 255 // max(1, h - 1)),
                  ((xx + yy) * 3) % 256], -1).astype(np.float64)
    for _ in range(4):
        x0, y0 = rng.integers(0, w // 2), rng.integers(0, h // 2)
        a[y0:y0 + h // 4, x0:x0 + w // 4] = rng.integers(0, 256, 3)
    return Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "RGB")


@pytest.fixture()
def mixed(tmp_path) -> Path:
    """12 CIFAR JPEGs (32 px: kept as they are) + larger JPEGs, one EXIF-rotated, + an RGBA
    PNG, in two classes."""
    d = tmp_path / "mixed"
    shutil.copytree(HERE / "data" / "cifar", d)
    for j, (w, h) in enumerate([(120, 90), (90, 140), (200, 150)]):
        _photo(w, h, j).save(d / "cat" / f"big{j}.jpg", quality=92)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    _photo(160, 100, 7).save(d / "ship" / "rotated.jpg", quality=92, exif=exif)
    rgba = _photo(80, 60, 9).convert("RGBA")
    rgba.putalpha(Image.fromarray(np.tile(np.arange(80, dtype=np.uint8) * 3, (60, 1)), "L"))
    rgba.save(d / "ship" / "alpha.png")
    return d


def test_a_bad_pack_option_is_refused_before_anything_is_written(tmp_path, images, teacher_file):
    for bad in ("jpeg", "jpeg:8", "jpeg:256:0", "jpeg:256:101", "jpeg:x", "png:256", "original:1",
                "jpeg:256:90:1"):
        with pytest.raises(InputError, match="--pack must be auto, none, original or jpeg:SIDE"):
            extract(extract_cfg(images, tmp_path / "c", teacher_file, pack=bad))
        assert not (tmp_path / "c").exists()
    assert PackSpec.parse("JPEG:320") == PackSpec("jpeg", 320, 90)
    assert str(PackSpec.parse("jpeg:256:75")) == "jpeg:256:75"


def test_jpeg_pack_resizes_orients_composites_and_keeps_small_jpegs(mixed):
    spec, bg = PackSpec("jpeg", 64, 90), (128, 128, 128)
    small = mixed / "cat" / sorted(os.listdir(mixed / "cat"))[0]
    p = spec.pack(Blob(small.read_bytes(), small.name), bg)
    assert p.kept and p.data == small.read_bytes()  # a 32-px JPEG is stored byte for byte
    big = mixed / "cat" / "big0.jpg"
    p = spec.pack(Blob(big.read_bytes(), big.name), bg)
    got = Image.open(io.BytesIO(p.data))
    assert not p.kept and got.format == "JPEG" and got.size == (64, 48)
    ref = Image.open(big).convert("RGB").resize((64, 48), Image.LANCZOS)
    assert _psnr(got.convert("RGB"), ref) > 25  # JPEG loss only (a wrong turn: ~10)
    rot = mixed / "ship" / "rotated.jpg"
    p = spec.pack(Blob(rot.read_bytes(), rot.name), bg)
    got = Image.open(io.BytesIO(p.data))
    assert got.size == (40, 64) and got.getexif().get(0x0112, 1) == 1  # orientation baked in
    ref = ImageOps.exif_transpose(Image.open(rot)).convert("RGB").resize((40, 64), Image.LANCZOS)
    assert _psnr(got.convert("RGB"), ref) > 25  # JPEG loss only (a wrong turn: ~10)
    png = mixed / "ship" / "alpha.png"
    p = spec.pack(Blob(png.read_bytes(), png.name), bg)
    got = np.asarray(Image.open(io.BytesIO(p.data)).convert("RGB"), dtype=np.float64)
    assert got.shape == (48, 64, 3)
    assert np.abs(got[:, 0] - 128).max() < 12  # alpha 0 at the left edge: the background
    orig = PackSpec("original").pack(Blob(png.read_bytes(), png.name), bg)
    assert orig.kept and orig.data == png.read_bytes()


def _psnr(a: Image.Image, b: Image.Image) -> float:
    x = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    return float(10 * np.log10(255.0**2 / max(np.mean(x * x), 1e-12)))


@pytest.fixture()
def packed(tmp_path, mixed, teacher_file):
    """A jpeg:64 packed cache (float32 features) and targets; the folder then deleted."""
    cache, targets = tmp_path / "cache", tmp_path / "targets"
    s = extract(extract_cfg(mixed, cache, teacher_file, pack="jpeg:64", dtype="float32",
                            image_size=48))
    assert s["skipped"] == 0 and "pack jpeg:64:90" not in s["pack"]  # one line, spec first
    fit_svd(FitConfig(str(cache), str(targets), dim=512, aligner="cs-var"))  # R18 width
    shutil.rmtree(mixed)
    return cache, targets, s


def test_replay_from_the_pack_is_the_tensor_the_teacher_saw(packed, teacher_file):
    cache, targets, _ = packed
    st = Store(cache, RAW)
    s = st.manifest["settings"]
    src = open_source(str(targets), None, None, "targets", None, 0)
    teacher, info = load_teacher("resnet18", teacher_file)
    teacher.eval()
    mean, std = info.mean_std
    for epoch in (0, 1):
        for b in Feed(src, "targets", batch_size=6, workers=0, seed=0, pin=False).epoch(
                epoch).loader:
            ids = b.ids.numpy()
            # independent reference: decode the stored bytes with PIL, crop with the stored
            # parameters, finish: the view the teacher saw was made from the packed image
            for j, i in enumerate(ids):
                p = st.read("params", [i], view=epoch)[0]
                img = Image.open(io.BytesIO(st.blob(int(i)))).convert("RGB")
                assert (img.size[1], img.size[0]) == (int(p[4]), int(p[5]))  # packed size
                u8 = crop_resize(img, p, s["image_size"], 1)[None]
                ref = finish(u8, torch.from_numpy(p[None]), mean, std)
                assert torch.allclose(b.views[j, 0], ref[0], atol=1e-6)
            with torch.no_grad():
                f = teacher(b.views[:, 0])["pre"].numpy()
            want = st.read("features", ids, view=epoch)
            assert np.allclose(f, want, rtol=1e-4, atol=1e-4)


def test_a_packed_cache_trains_and_resumes_with_the_folder_gone_opening_no_image_file(
        packed, tmp_path, mixed, monkeypatch):
    cache, targets, summary = packed
    assert not mixed.exists()
    opened: list[str] = []
    real_open, real_os_open = builtins.open, os.open

    def spy(f, *a, **k):
        opened.append(str(f))
        return real_open(f, *a, **k)

    def spy_os(f, *a, **k):
        opened.append(str(f))
        return real_os_open(f, *a, **k)

    monkeypatch.setattr(builtins, "open", spy)
    monkeypatch.setattr(os, "open", spy_os)
    from dataclasses import replace

    cfg = TrainConfig(student="resnet18", out=str(tmp_path / "full"), targets=str(targets),
                      epochs=3, batch_size=4, workers=0, device="cpu", precision="fp32",
                      lr=0.05, image_size=48)
    train_student(cfg)
    interrupt_after_epoch_1(monkeypatch, replace(cfg, out=str(tmp_path / "part")))
    train_student(replace(cfg, out=str(tmp_path / "part"), resume=True))
    assert opened and not [f for f in opened if str(mixed) in f]  # files were opened, none there
    wf, wp = (torch.load(tmp_path / r / "student.pth", weights_only=True) for r in ("full", "part"))
    assert all(torch.equal(wf[k], wp[k]) for k in wf)  # resumed == uninterrupted, from the pack


def test_a_damaged_pack_is_refused_by_the_stage_that_reads_it(packed, tmp_path):
    cache, targets, _ = packed
    shard = cache / "shard-00000.h5"
    with h5py.File(shard, "r") as f:
        off = f["pack"].id.get_offset()
    data = bytearray(shard.read_bytes())
    data[off + 100] ^= 0xFF
    shard.write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="array 'pack' does not match its checksum"):
        open_source(str(targets), None, None, "targets", None, 0)


def test_pack_totals_in_the_manifest_summary_and_info(packed):
    cache, _, summary = packed
    m = json.loads((cache / "manifest.json").read_text())
    p = m["pack"]
    assert p["spec"] == "jpeg:64:90" and p["images"] == 17 and p["kept"] == 12  # 12 CIFAR JPEGs
    with h5py.File(cache / "shard-00000.h5", "r") as f0:
        first = f0["pack_offsets"][-1]
    total = sum(h5py.File(c, "r")["pack_offsets"][-1] for c in sorted(cache.glob("shard-*.h5")))
    assert first > 0 and p["bytes"] == total
    assert summary["pack"].startswith("jpeg:64:90: ") and "KiB per image" in summary["pack"]
    from click.testing import CliRunner

    from kdep_cache.cli import main
    out = CliRunner().invoke(main, ["info", str(cache)]).output
    assert "pack: jpeg:64:90:" in out and "no stage reads the image folder" in out


def test_extract_resume_with_a_pack_equals_one_run_and_another_pack_is_refused(
        tmp_path, images, teacher_file):
    a, b = tmp_path / "a", tmp_path / "b"
    extract(extract_cfg(images, a, teacher_file, pack="original"))
    extract(extract_cfg(images, b, teacher_file, pack="original"))
    for f in ("shard-00002.h5", "shard-00002.json", "manifest.json"):
        (b / f).unlink()
    with pytest.raises(InputError, match="pack"):
        extract(extract_cfg(images, b, teacher_file, pack="jpeg:64"))
    extract(extract_cfg(images, b, teacher_file, pack="original"))
    for s in sorted(a.glob("shard-*.h5")):
        assert s.read_bytes() == (b / s.name).read_bytes()
    st = Store(a, RAW)
    for i, rel in enumerate(json.loads((a / "images.json").read_text())["paths"]):
        assert st.blob(i) == (images / rel).read_bytes()  # original: the files' bytes


def test_an_unpacked_cache_hashes_each_file_once_then_compares_its_stat(tmp_path, images,
                                                                        teacher_file,
                                                                        monkeypatch):
    cache = tmp_path / "cache"
    extract(extract_cfg(images, cache, teacher_file, views=3, pack="none"))
    src = open_source(None, str(cache), None, "features", None, 0)
    hashed: list[int] = []
    real = readers.hashlib.sha256

    def counting(data=b""):
        hashed.append(len(data))
        return real(data)

    monkeypatch.setattr(readers.hashlib, "sha256", counting)
    feed = Feed(src, "features", batch_size=4, workers=0, seed=0, pin=False)
    n = len(src.ids)

    def run_epoch(e):
        hashed.clear()
        for _ in feed.epoch(e):
            pass
        return len(hashed)

    assert run_epoch(0) == n          # first epoch: every file hashed (and checked)
    assert run_epoch(1) == 0          # then its stat stands for it
    one = images / src.images.paths[int(src.ids[0])]
    os.utime(one, ns=(one.stat().st_atime_ns, one.stat().st_mtime_ns + 10**9))
    assert run_epoch(2) == 1          # a changed stat: hashed again (same bytes: accepted)
    data = bytearray(one.read_bytes())
    data[-3] ^= 0x01                  # other content, same size, new mtime
    one.write_bytes(bytes(data))
    with pytest.raises(LineageError, match="same names, other content"):
        run_epoch(3)


def _gpu_items_from_pack(folder, tmp_path, names, pack, monkeypatch, corrupt=None):
    """extract --pack's reader for --decode gpu items, then a PackReader over the packed
    bytes (as train-student's replay reads them), through nvJPEG's code path."""
    from kdep_cache.names import RENDER_GPU
    from kdep_cache.views.augment import AugmentSpec
    from kdep_cache.views.images import ImageList
    from kdep_cache.views.nvjpeg import collate_bytes, read_item
    from kdep_cache.views.readers import PackingReader, PackReader
    images = ImageList(str(folder), names, [-1] * len(names), [])
    spec = AugmentSpec(render=RENDER_GPU)
    packing = PackingReader(images, PackSpec.parse(pack), spec.background)
    first = collate_bytes([read_item(images, i, [0, 1], spec, 7, reader=packing)
                           for i in range(len(names))])
    blobs = [bytes(p.data) for p in first.packed]
    if corrupt is not None:
        raw = blobs[corrupt]
        blobs[corrupt] = raw[:raw.find(b"\xff\xda") + 20]  # header intact, data cut

    class FakeStore:
        def blob(self, i):
            return blobs[i]

    replay = PackReader(images, FakeStore())
    again = collate_bytes([read_item(images, i, [0, 1], spec, 7, first.params[i].numpy(),
                                     reader=replay) for i in range(len(names))])
    return first, again, blobs


@pytest.mark.parametrize("pack", ["jpeg:64", "original"])
def test_nvjpeg_path_from_the_pack_crops_the_oriented_packed_image(mixed, tmp_path, pack,
                                                                   monkeypatch):
    import torchvision.io

    from kdep_cache.views.images import load_rgb
    from kdep_cache.views.nvjpeg import render_batch
    real = torchvision.io.decode_jpeg

    def nvjpeg_like(data, mode=torchvision.io.ImageReadMode.UNCHANGED, device="cpu",
                    apply_exif_orientation=False):  # CUDA's decode ignores EXIF
        return real(data, mode=mode, device=device, apply_exif_orientation=False)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", nvjpeg_like)
    names = ["ship/rotated.jpg", "cat/big1.jpg", "cat/big2.jpg"]
    first, again, blobs = _gpu_items_from_pack(mixed, tmp_path, names, pack, monkeypatch)
    assert bool(again.ok.all()) and torch.equal(first.params, again.params)
    r = render_batch(again.views, again.params, 16, "cpu")
    assert r.bad == {}
    for n, name in enumerate(names):
        ref_img = load_rgb(Blob(blobs[n], name))  # PIL on the packed bytes, EXIF applied
        assert (int(again.params[n, 0, 4]), int(again.params[n, 0, 5])) == (ref_img.size[1],
                                                                            ref_img.size[0])
        for k in range(2):
            ref = crop_resize(ref_img, again.params[n, k].numpy(), 16).float()
            assert (r.views[n, k].float() - ref).abs().mean() < 3.0, (name, k)


def test_one_bad_packed_image_fails_alone_not_the_nvjpeg_batch(mixed, tmp_path, monkeypatch):
    from kdep_cache.views.nvjpeg import render_batch
    names = ["cat/big0.jpg", "cat/big1.jpg", "cat/big2.jpg"]
    _, again, _ = _gpu_items_from_pack(mixed, tmp_path, names, "jpeg:64", monkeypatch,
                                       corrupt=1)
    r = render_batch(again.views, again.params, 16, "cpu")
    assert list(r.bad) == [1] and "cannot be decoded" in r.bad[1]
    assert r.views[0].any() and r.views[2].any() and not r.views[1].any()


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_nvjpeg_from_the_pack_matches_pil(mixed, tmp_path, monkeypatch):
    from kdep_cache.views.images import load_rgb
    from kdep_cache.views.nvjpeg import render_batch
    names = ["ship/rotated.jpg", "cat/big1.jpg", "ship/alpha.png"]
    _, again, blobs = _gpu_items_from_pack(mixed, tmp_path, names, "jpeg:64", monkeypatch)
    r = render_batch(again.views, again.params, 16, "cuda")
    assert r.bad == {} and r.views.is_cuda
    for n, name in enumerate(names):
        ref = crop_resize(load_rgb(Blob(blobs[n], name)), again.params[n, 0].numpy(), 16).float()
        assert (r.views[n, 0].cpu().float() - ref).abs().mean() < 6.0, name


def test_auto_pack_scales_with_the_extraction_size_and_a_small_side_warns(tmp_path, images,
                                                                          teacher_file, caplog):
    assert PackSpec.parse("auto").resolved(224) == PackSpec("jpeg", 320, 90)
    assert PackSpec.parse("auto").resolved(64) == PackSpec("jpeg", 320, 90)
    assert PackSpec.parse("auto").resolved(448) == PackSpec("jpeg", 640, 90)
    assert PackSpec.parse("original").resolved(448) == PackSpec("original")
    s = extract(extract_cfg(images, tmp_path / "c", teacher_file))  # the default
    assert Store(tmp_path / "c", RAW).manifest["settings"]["pack"] == "jpeg:320:90"
    assert s["pack"].startswith("jpeg:320:90")
    with caplog.at_level("WARNING"):
        extract(extract_cfg(images, tmp_path / "d", teacher_file, pack="jpeg:32", image_size=64))
    assert any("below the extraction size 64" in r.getMessage() for r in caplog.records)


def test_a_cache_from_before_the_pack_is_told_to_resume_with_pack_none(tmp_path, images,
                                                                       teacher_file):
    c = tmp_path / "c"
    extract(extract_cfg(images, c, teacher_file, pack="none"))
    for f in ("shard-00002.h5", "shard-00002.json", "manifest.json"):
        (c / f).unlink()
    with pytest.raises(InputError, match="a cache made before --pack resumes with --pack none"):
        extract(extract_cfg(images, c, teacher_file))


def test_an_inode_above_2_63_is_kept_as_an_int64():
    st = os.stat_result((0o100644, 2**63 + 7, 1, 1, 0, 0, 5, 0, 0, 0))
    size, _, ino = readers.stat3(st)
    assert size == 5 and ino == 2**63 + 7 - 2**64
    torch.tensor([[size, 1, ino]], dtype=torch.int64)  # what batch_of builds: no overflow


def test_a_packed_svg_replays_as_the_jpeg_it_became(tmp_path, teacher_file):
    from kdep_cache.views.svg import svg_supported
    if not svg_supported():
        pytest.skip("cairosvg not installed")
    d = tmp_path / "imgs" / "a"
    d.mkdir(parents=True)
    shutil.copy(sorted((HERE / "data" / "cifar").glob("*/*.jpg"))[0], d / "p.jpg")
    (d / "v.svg").write_text('<svg xmlns="http://www.w3.org/2000/svg" width="64" height="48">'
                             '<rect width="64" height="48" fill="#c33"/></svg>')
    extract(extract_cfg(tmp_path / "imgs", tmp_path / "c", teacher_file, pack="jpeg:40",
                        shard_size=5))
    src = open_source(None, str(tmp_path / "c"), None, "features", None, 0)
    assert len(src.ids) == 2
    for _ in Feed(src, "features", batch_size=2, workers=0, seed=0, pin=False).epoch(0):
        pass  # the SVG's packed JPEG decodes (it was decoded as an SVG: ParseError)
