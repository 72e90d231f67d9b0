"""The --decode gpu and CUDA-feed logic, exercised on the CPU (issue 22 items 1, 2, 10, 20);
the ``cuda`` tests run on a lent GPU (benchmarks/gpu_check.sh)."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
import torchvision.io
from conftest import HERE
from PIL import Image, ImageOps

from kdep_cache.augment import AugmentSpec, crop_resize
from kdep_cache.gpu_decode import apply_exif_orientation, collate_bytes, read_item, render_batch
from kdep_cache.images import ImageList, load_rgb
from kdep_cache.names import RENDER_GPU

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
PHOTO = sorted((HERE / "data" / "cifar").glob("*/*.jpg"))[0]


def _oriented(folder, orientation: int, name=None) -> str:
    """A non-square JPEG (24 x 32) whose EXIF says ``orientation``."""
    im = Image.open(PHOTO).convert("RGB").resize((32, 24))
    exif = Image.Exif()
    exif[0x0112] = orientation
    name = name or f"o{orientation}.jpg"
    im.save(folder / name, quality=95, exif=exif.tobytes())
    return name


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_of_a_decoded_tensor_is_pils(tmp_path, orientation):
    with Image.open(tmp_path / _oriented(tmp_path, orientation)) as im:
        im.load()
        raw = torch.from_numpy(np.array(im.convert("RGB"))).permute(2, 0, 1)
        ref = torch.from_numpy(np.array(ImageOps.exif_transpose(im).convert("RGB")))
    assert torch.equal(apply_exif_orientation(raw, orientation), ref.permute(2, 0, 1))


def _nvjpeg_like(monkeypatch):
    """torchvision's CPU decode_jpeg made to ignore EXIF, as its CUDA decode does."""
    real = torchvision.io.decode_jpeg

    def decode(data, mode=torchvision.io.ImageReadMode.UNCHANGED, device="cpu",
               apply_exif_orientation=False):
        return real(data, mode=mode, device=device, apply_exif_orientation=False)

    monkeypatch.setattr(torchvision.io, "decode_jpeg", decode)


def _items(folder, names, spec=None):
    images = ImageList(str(folder), names, [-1] * len(names), [])
    spec = spec or AugmentSpec(render=RENDER_GPU)
    return collate_bytes([read_item(images, i, [0, 1], spec, 7) for i in range(len(names))])


def test_device_decode_crops_the_oriented_image(tmp_path, monkeypatch):
    """Orientations 5-8 swap height and width: crops sampled on the oriented size must be
    cut from the oriented pixels (they were cut from the stored ones, outside the image)."""
    _nvjpeg_like(monkeypatch)
    names = [_oriented(tmp_path, o) for o in range(1, 9)]
    ids, jpegs, p, ok, reasons, *_ = _items(tmp_path, names)
    assert bool(ok.all())
    r = render_batch(jpegs, p, 16, "cpu")
    assert r.bad == {}
    for n, name in enumerate(names):
        ref_img = load_rgb(tmp_path / name)  # PIL, EXIF applied
        assert (int(p[n, 0, 4]), int(p[n, 0, 5])) == (ref_img.size[1], ref_img.size[0])
        for k in range(2):
            ref = crop_resize(ref_img, p[n, k].numpy(), 16).float()
            assert (r.views[n, k].float() - ref).abs().mean() < 3.0, (name, k)


def test_one_undecodable_file_fails_alone_not_the_batch(tmp_path):
    names = [_oriented(tmp_path, 1, f"{c}.jpg") for c in "abc"]
    raw = (tmp_path / "b.jpg").read_bytes()
    (tmp_path / "b.jpg").write_bytes(raw[:raw.find(b"\xff\xda") + 20])  # header intact
    ids, jpegs, p, ok, reasons, *_ = _items(tmp_path, names)
    assert bool(ok.all())  # the header reads: only the decode can tell
    with pytest.raises(RuntimeError):
        torchvision.io.decode_jpeg([j.data for j in jpegs])  # the batch fails as a whole
    r = render_batch(jpegs, p, 16, "cpu")
    assert list(r.bad) == [1] and "cannot be decoded" in r.bad[1]
    assert not r.views[1].any() and r.views[0].any() and r.views[2].any()
    alone = render_batch([jpegs[2]], p[2:], 16, "cpu")
    assert torch.equal(alone.views[0], r.views[2])
    x = r.mark(ok, reasons)
    assert x is r.views and ok.tolist() == [True, False, True] and "cannot" in reasons[1]


def test_a_file_decoding_to_another_size_than_its_header_is_refused(tmp_path):
    names = [_oriented(tmp_path, 1)]
    ids, jpegs, p, ok, reasons, *_ = _items(tmp_path, names)
    p[0, :, 4] += 8  # the views were sampled on a 32-row image
    r = render_batch(jpegs, p, 16, "cpu")
    assert list(r.bad) == [0] and "decodes to 24x32" in r.bad[0]


@pytest.mark.cuda
@cuda
def test_cuda_decode_applies_exif_and_decodes_cmyk(tmp_path):
    names = [_oriented(tmp_path, o) for o in (1, 3, 6, 8)]
    cmyk = Image.open(PHOTO).convert("CMYK")
    buf = io.BytesIO()
    cmyk.save(buf, "JPEG", quality=95)
    (tmp_path / "cmyk.jpg").write_bytes(buf.getvalue())
    names.append("cmyk.jpg")
    ids, jpegs, p, ok, reasons, *_ = _items(tmp_path, names)
    r = render_batch(jpegs, p, 16, "cuda")
    assert r.bad == {} and r.views.is_cuda
    for n, name in enumerate(names):
        ref = crop_resize(load_rgb(tmp_path / name), p[n, 0].numpy(), 16).float()
        assert (r.views[n, 0].cpu().float() - ref).abs().mean() < 6.0, name
