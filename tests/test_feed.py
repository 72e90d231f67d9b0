"""Replay split in two: the CPU part (uint8) + the batched device part == today's render,
JPEG draft decoding as a recorded render method, old-format caches, CUDA paths (skipped
without CUDA)."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import HERE, extract_cfg
from PIL import Image

from kdep_cache.errors import ArtifactError, InputError
from kdep_cache.extract.run import extract
from kdep_cache.names import RENDER_DRAFT, RENDER_FULL
from kdep_cache.train.feed import Feed
from kdep_cache.train.sources import open_source
from kdep_cache.views.augment import (
    AugmentSpec,
    crop_resize,
    draft_factor,
    normalize,
    render,
    sample_params,
)
from kdep_cache.views.datasets import ViewDataset
from kdep_cache.views.images import load_rgb
from kdep_cache.views.photometric import finish

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


def _img(h=37, w=53, seed=0):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8))


def _params(n, h=37, w=53, spec=None):
    spec = spec or AugmentSpec()
    ps = [sample_params(spec, 0, v, i, h, w) for i in range(n) for v in range(2)]
    ps[1][7:10], ps[2][11:14] = 1.0, 0.0  # one view without jitter, one without lighting
    return np.stack(ps)


@pytest.mark.parametrize("size", [16, 40])
def test_cpu_device_part_is_todays_render_bitwise(size):
    img, ps = _img(), _params(30)
    assert len(set(ps[:, 10].astype(int))) == 6  # every jitter order is exercised
    ref = torch.stack([normalize(render(img, p, size), MEAN, STD) for p in ps])
    got = finish(torch.stack([crop_resize(img, p, size) for p in ps]), ps, MEAN, STD)
    assert got.dtype == torch.float32 and torch.equal(got, ref)


def test_batched_device_part_equals_per_image_part():
    img, ps = _img(), _params(12)
    u8 = torch.stack([crop_resize(img, p, 24) for p in ps])
    one = torch.cat([finish(u8[j:j + 1], ps[j:j + 1], MEAN, STD) for j in range(len(ps))])
    assert torch.equal(finish(u8, ps, MEAN, STD), one)


def test_device_part_against_a_numpy_reference():
    """brightness, contrast (gray mean), saturation in the stored order, PCA lighting and
    normalization, written out in float64 numpy."""
    img, ps = _img(), _params(4)
    eigval = np.array([0.2175, 0.0188, 0.0045])
    eigvec = np.array([[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140],
                       [-0.5836, -0.6948, 0.4203]])
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    u8 = torch.stack([crop_resize(img, p, 20) for p in ps])
    got = finish(u8, ps, MEAN, STD).numpy()
    for j, p in enumerate(ps):
        x = u8[j].numpy().astype(np.float64) / 255
        for k in orders[int(p[10])]:
            f = p[7 + k]
            g = 0.299 * x[0] + 0.587 * x[1] + 0.114 * x[2]
            x = np.clip([x * f, f * x + (1 - f) * g.mean(), f * x + (1 - f) * g][k], 0, 1)
        x = x + (eigvec @ (p[11:14] * eigval))[:, None, None]
        x = (x - np.array(MEAN)[:, None, None]) / np.array(STD)[:, None, None]
        assert np.allclose(got[j], x, atol=2e-5)


def test_crop_resize_is_the_pixel_crop_and_flip():
    img, p = _img(), sample_params(AugmentSpec(), 0, 0, 3, 37, 53)
    p[0:4], p[6] = (3, 5, 16, 16), 0
    ref = np.asarray(img)[3:19, 5:21].transpose(2, 0, 1)
    assert np.array_equal(crop_resize(img, p, 16).numpy(), ref)
    p[6] = 1
    assert np.array_equal(crop_resize(img, p, 16).numpy(), ref[:, :, ::-1])


def test_draft_factor_never_upsamples():
    p = np.zeros(14)
    for (ch, cw), size, r in [((1000, 900), 224, 4), ((447, 900), 224, 1), ((448, 448), 224, 2),
                              ((3172, 5640), 224, 8), ((3172, 5640), 112, 8), ((100, 100), 224, 1)]:
        p[2:4] = ch, cw
        assert draft_factor(p, size) == r
        assert min(ch, cw) / r >= size or r == 1


def _jpeg(path, h=192, w=256):
    yy, xx = np.mgrid[0:h, 0:w]
    a = np.stack([xx * 255 / w, yy * 255 / h, (xx + yy) * 127 / (w + h)], -1).astype(np.uint8)
    Image.fromarray(a).save(path, quality=95)
    return path


def test_draft_decode_scales_the_box(tmp_path):
    """A 1/2 draft of a smooth JPEG, cropped with the box scaled by 1/2, is the same picture
    as the full decode cropped (within JPEG/resampling error); PNGs ignore the draft."""
    path = _jpeg(tmp_path / "a.jpg")
    full, half = load_rgb(path), load_rgb(path, draft=2)
    assert full.size == (256, 192) and half.size == (128, 96)
    p = np.zeros(14)
    p[0:7] = 40, 60, 120, 140, 192, 256, 0
    a = crop_resize(full, p, 48).float()
    b = crop_resize(half, p, 48, 2).float()
    assert (a - b).abs().mean() < 2.0
    p[0:2] = 0, 0  # a wrong box would differ by far more
    assert (crop_resize(half, p, 48, 2).float() - a).abs().mean() > 10
    Image.open(path).save(tmp_path / "b.png")
    assert load_rgb(tmp_path / "b.png", draft=2).size == (256, 192)
    with pytest.raises(ValueError, match="changed"):
        crop_resize(half, p, 48, 4)


def _big_jpegs(dst: Path) -> Path:
    """The CIFAR test photos enlarged to 96 px JPEGs (same folders)."""
    for f in sorted((HERE / "data" / "cifar").rglob("*.jpg")):
        out = dst / f.relative_to(HERE / "data" / "cifar")
        out.parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).convert("RGB").resize((96, 96), Image.BICUBIC).save(out, quality=90)
    return dst


def test_draft_views_replay_bitwise_and_are_recorded(tmp_path, teacher_file):
    """96-px JPEGs at 32 px: crops of side >= 64 are decoded at 1/2 by the draft."""
    extract(extract_cfg(_big_jpegs(tmp_path / "images"), tmp_path / "c", teacher_file, views=3,
                        image_size=32, dtype="float32"))
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert cfg["augment"]["render"] == RENDER_DRAFT
    src = open_source(None, str(tmp_path / "c"), None, "features", None, 0)
    ps = np.stack([src.cache.read("params", src.ids, view=v) for v in range(3)])  # (K, n, P)
    assert (np.minimum(ps[:, :, 2], ps[:, :, 3]) >= 64).any()  # some views used the draft
    from kdep_cache.models import load_teacher
    teacher, _ = load_teacher("resnet18", teacher_file)
    for epoch in (0, 1, 2):
        for b in Feed(src, "features", 4, 0, 0, False).epoch(epoch):
            x, t = b.x, b.target
            with torch.no_grad():
                f = teacher(x)["pre"]
            assert torch.allclose(f, t, rtol=1e-4, atol=1e-4 * float(t.abs().max()))
    ids = src.ids[:6]
    ref = ViewDataset(src.images, ids, [0], 32, src.mean, src.std, src.spec, 0)
    got = ViewDataset(src.images, ids, [0], 32, src.mean, src.std, src.spec, 0,
                      params=ps[0][:6, None])
    for j in range(len(ids)):
        assert torch.equal(ref[j].views, got[j].views)


def test_old_format_cache_replays_as_it_was_written(tmp_path, teacher_file):
    """A cache written before the render key (full decode) is read as full-decode/1 and
    replayed by the original render, bitwise; an unknown method is refused in one line."""
    extract(extract_cfg(_big_jpegs(tmp_path / "images"), tmp_path / "c", teacher_file,
                        views=2, augment=AugmentSpec(render=RENDER_FULL)))
    for name in ("config.json", "manifest.json"):  # as the older code wrote them: no key
        d = json.loads((tmp_path / "c" / name).read_text())
        assert "render" not in d.get("settings", d)["augment"]
    src = open_source(None, str(tmp_path / "c"), None, "features", None, 0)
    assert src.spec.render == RENDER_FULL
    ps = src.cache.read("params", src.ids, view=1)
    feed = Feed(src, "features", 12, 0, 0, False)
    (b,) = list(feed.epoch(1))  # one batch: all 12 images, view 1
    x = b.x
    ids = feed.order.ids()
    ref = torch.stack([normalize(render(load_rgb(Path(src.images.root) / src.images.paths[i]),
                                        ps[list(src.ids).index(i)], 32), src.mean, src.std)
                       for i in ids])
    assert torch.equal(x, ref)
    with pytest.raises(ArtifactError, match="does not know"):
        AugmentSpec.from_json({**AugmentSpec().to_json(), "render": "warp/9"})


def test_decode_gpu_without_cuda_is_one_line(tmp_path, teacher_file):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    shutil.copytree(HERE / "data" / "cifar", tmp_path / "images")
    with pytest.raises(InputError, match="no CUDA device") as e:
        extract(extract_cfg(tmp_path / "images", tmp_path / "c", teacher_file, decode="gpu"))
    assert "\n" not in str(e.value)


def test_decode_option_must_match_the_cache_render_method():
    from kdep_cache.names import RENDER_GPU
    from kdep_cache.views.nvjpeg import check_decode
    cpu = torch.device("cpu")
    check_decode(None, AugmentSpec(), cpu)
    check_decode("cpu", AugmentSpec(render=RENDER_FULL), cpu)
    with pytest.raises(InputError, match="other pixels"):
        check_decode("gpu", AugmentSpec(), cpu)
    for decode in (None, "cpu", "gpu"):  # a --decode gpu cache without CUDA: one way out
        with pytest.raises(InputError, match="train on a CUDA device .* re-extract the cache "
                                             "with --decode cpu") as e:
            check_decode(decode, AugmentSpec(render=RENDER_GPU), cpu)
        assert "use --decode" not in str(e.value)


def test_no_draft_extract_writes_the_settings_of_older_caches(tmp_path, teacher_file):
    """extract --no-draft: full-decode/1, written as older caches were (no key), so a cache
    that older code left unfinished resumes under the same settings."""
    from click.testing import CliRunner

    from kdep_cache.cli import main
    r = CliRunner().invoke(main, ["extract", "--data", str(HERE / "data" / "cifar"), "--teacher",
                                  "resnet18", "--teacher-weights", teacher_file, "--out",
                                  str(tmp_path / "c"), "--views", "1", "--image-size", "32",
                                  "--workers", "0", "--device", "cpu", "--no-draft"])
    assert r.exit_code == 0, r.output
    cfg = json.loads((tmp_path / "c" / "config.json").read_text())
    assert "render" not in cfg["augment"]
    assert AugmentSpec.from_json(cfg["augment"]).render == RENDER_FULL


@pytest.mark.cuda
@cuda
def test_cuda_device_part_agrees_with_the_cpu_one():
    img, ps = _img(64, 80), _params(16, 64, 80)
    u8 = torch.stack([crop_resize(img, p, 32) for p in ps])
    cpu = finish(u8, ps, MEAN, STD)
    gpu = finish(u8.cuda(), ps, MEAN, STD).cpu()
    assert (gpu - cpu).abs().max() <= 1e-5


@pytest.mark.cuda
@cuda
def test_cuda_feed_prefetch_equals_the_cpu_feed(tmp_path, teacher_file):
    shutil.copytree(HERE / "data" / "cifar", tmp_path / "images")
    extract(extract_cfg(tmp_path / "images", tmp_path / "c", teacher_file, views=2))
    src = open_source(None, str(tmp_path / "c"), None, "features", None, 0)
    for epoch in (0, 1):
        ref = list(Feed(src, "features", 4, 0, 0, False).epoch(epoch))
        got = list(Feed(src, "features", 4, 2, 0, True, device="cuda").epoch(epoch))
        assert len(got) == len(ref)
        for b, r in zip(got, ref):
            assert b.x.is_cuda and (b.x.cpu() - r.x).abs().max() <= 1e-5
            assert torch.equal(b.target.cpu(), r.target)


@pytest.mark.cuda
@cuda
def test_nvjpeg_views_are_close_to_pil(tmp_path):
    from kdep_cache.views.nvjpeg import render_batch
    path = _jpeg(tmp_path / "a.jpg")
    p = torch.zeros(1, 1, 14, dtype=torch.float64)
    p[0, 0, :7] = torch.tensor([40, 60, 120, 140, 192, 256, 1])
    data = torch.from_numpy(np.fromfile(path, dtype=np.uint8))
    got = render_batch([data], p, 48, "cuda")[0, 0].cpu().float()
    ref = crop_resize(load_rgb(path), p[0, 0].numpy(), 48).float()
    assert (got - ref).abs().mean() < 3.0
