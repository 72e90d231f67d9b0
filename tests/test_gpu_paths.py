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

from kdep_cache.names import RENDER_GPU
from kdep_cache.views.augment import AugmentSpec, crop_resize
from kdep_cache.views.images import ImageList, load_rgb
from kdep_cache.views.nvjpeg import apply_exif_orientation, collate_bytes, read_item, render_batch

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
    b = _items(tmp_path, names)
    jpegs, p, ok = b.views, b.params, b.ok
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
    b = _items(tmp_path, names)
    jpegs, p, ok, reasons = b.views, b.params, b.ok, b.reasons
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
    b = _items(tmp_path, names)
    jpegs, p = b.views, b.params
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
    b = _items(tmp_path, names)
    jpegs, p = b.views, b.params
    r = render_batch(jpegs, p, 16, "cuda")
    assert r.bad == {} and r.views.is_cuda
    for n, name in enumerate(names):
        ref = crop_resize(load_rgb(tmp_path / name), p[n, 0].numpy(), 16).float()
        assert (r.views[n, 0].cpu().float() - ref).abs().mean() < 6.0, name


def _views(n=6, size=16):
    from kdep_cache.views.augment import sample_params
    ps = np.stack([sample_params(AugmentSpec(), 0, v, i, 37, 53) for i in range(n)
                   for v in range(2)])
    ps[1][7:10], ps[2][11:14] = 1.0, 0.0  # one view without jitter, one without lighting
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 255, (len(ps), 3, size, size),
                                                           dtype=np.uint8))
    return x, ps


MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def test_packed_device_part_equals_the_cpu_one_bitwise():
    """What a CUDA batch runs, run on the CPU: the same numbers as the CPU path, from one
    parameter tensor."""
    from kdep_cache.views.photometric import finish, finish_packed, pack_params
    x, ps = _views()
    ref = finish(x, ps, MEAN, STD)
    packed = pack_params(ps, MEAN, STD)
    assert packed.dtype == torch.float32 and packed.dim() == 1 and packed.is_contiguous()
    assert torch.equal(finish_packed(x, packed, ps), ref)


def test_device_part_crosses_to_the_device_in_one_copy_and_never_reads_back(monkeypatch):
    """On a non-CPU device (meta: no data, any read-back fails) the batch's numbers cross in
    one ``.to`` and nothing else is made on the host for the device (was one copy per jitter
    op, lighting, mean and std, each a host wait from pageable memory on CUDA)."""
    from kdep_cache.views.photometric import finish
    x, ps = _views()
    moves, real_to = [], torch.Tensor.to

    def counting_to(self, *a, **k):
        out = real_to(self, *a, **k)
        if out.device != self.device:
            moves.append(tuple(self.shape))
        return out

    real_as_tensor = torch.as_tensor

    def counting_as_tensor(data, *a, **k):
        if k.get("device") is not None:
            moves.append("as_tensor")
        return real_as_tensor(data, *a, **k)

    monkeypatch.setattr(torch.Tensor, "to", counting_to)
    monkeypatch.setattr(torch, "as_tensor", counting_as_tensor)
    xm = real_to(x, "meta")
    out = finish(xm, ps, MEAN, STD)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == torch.float32
    assert moves == [(len(ps) * 18 + 6,)]


def test_the_loss_is_read_back_once_per_window():
    from kdep_cache.train.readback import CUDA_EVERY, Readback, readback_steps
    assert readback_steps(torch.device("cpu")) == 1
    assert readback_steps(torch.device("cuda")) == CUDA_EVERY > 1
    rb = Readback(3)
    got = [rb.add(torch.tensor([float(i), 1.0])) for i in range(7)]
    assert [len(g) for g in got] == [0, 0, 3, 0, 0, 3, 0] and rb.reads == 2
    rest = rb.flush()
    assert [s for s, _ in rest] == [6] and rb.reads == 3 and rb.flush() == []
    assert [float(r[0]) for _, r in got[2] + got[5]] == [0, 1, 2, 3, 4, 5]


def test_the_tally_stops_at_the_first_non_finite_step():
    from kdep_cache.train.readback import Tally
    t = Tally()
    t.names = ["loss", "x"]
    rows = [(0, torch.tensor([1.0, 2.0, 4.0])), (1, torch.tensor([float("nan"), 0.0, 4.0]))]
    assert t.take(rows) == 1 and t.steps == 1 and t.seen == 4 and t.mean("loss") == 1.0


@pytest.mark.cuda
@cuda
def test_cuda_parameters_are_one_pinned_tensor():
    from kdep_cache.views.photometric import finish, pack_params
    x, ps = _views()
    assert pack_params(ps, MEAN, STD, pin=True).is_pinned()
    assert (finish(x.cuda(), ps, MEAN, STD).cpu() - finish(x, ps, MEAN, STD)).abs().max() <= 1e-5
