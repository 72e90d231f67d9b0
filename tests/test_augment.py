import numpy as np
import pytest
from PIL import Image

from kdep_cache.views.augment import PARAM_FIELDS, AugmentSpec, render, sample_params


def test_params_are_a_pure_function_of_seed_view_id():
    spec = AugmentSpec()
    a = sample_params(spec, 0, 1, 7, 40, 50)
    assert np.array_equal(a, sample_params(spec, 0, 1, 7, 40, 50))
    assert not np.array_equal(a, sample_params(spec, 0, 2, 7, 40, 50))
    assert not np.array_equal(a, sample_params(spec, 0, 1, 8, 40, 50))
    assert not np.array_equal(a, sample_params(spec, 1, 1, 7, 40, 50))
    assert len(a) == len(PARAM_FIELDS)


def test_crop_boxes_lie_inside_the_image_and_respect_the_scale_range():
    spec = AugmentSpec(scale=(0.25, 0.5))
    for i in range(300):
        top, left, h, w, H, W = sample_params(spec, 0, 0, i, 37, 53)[:6]
        assert 0 <= top and top + h <= H and 0 <= left and left + w <= W
        area = h * w / (H * W)
        assert 0.2 <= area <= 0.56 or (h == H or w == W)  # in range, or the centre fallback
    flips = [sample_params(spec, 0, 0, i, 37, 53)[6] for i in range(400)]
    assert 0.4 < np.mean(flips) < 0.6


def test_center_views_and_switches():
    spec = AugmentSpec(kind="center", center_crop=1.0)
    p = sample_params(spec, 0, 3, 5, 30, 40)
    assert tuple(p[:4]) == (0, 5, 30, 30) and p[6] == 0 and np.all(p[7:10] == 1) and np.all(p[11:] == 0)
    off = AugmentSpec(jitter=0.0, lighting=0.0, flip=False)
    q = sample_params(off, 0, 0, 0, 30, 40)
    assert q[6] == 0 and np.all(q[7:10] == 1) and np.all(q[11:] == 0)
    v0 = AugmentSpec(center_view0=True)
    assert sample_params(v0, 0, 0, 1, 30, 40)[6] == 0


def test_render_replays_bitwise_and_crops_the_stored_box():
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (37, 53, 3), dtype=np.uint8))
    p = sample_params(AugmentSpec(), 0, 0, 3, 37, 53)
    a, b = render(img, p, 24), render(img, p, 24)
    assert a.shape == (3, 24, 24) and a.dtype.__str__() == "torch.float32"
    assert bool((a == b).all())
    # a box of the output size, no jitter/lighting: the render is exactly the pixel crop
    p2 = p.copy()
    p2[0:4], p2[6], p2[7:10], p2[11:] = (3, 5, 16, 16), 0, 1, 0
    ref = np.asarray(img)[3:19, 5:21]
    got = (render(img, p2, 16).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(ref, got)
    p2[6] = 1  # flipped
    got = (render(img, p2, 16).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
    assert np.array_equal(ref[:, ::-1], got)
    p2[6], p2[7] = 0, 1.1  # brightness only
    got = render(img, p2, 16).permute(1, 2, 0).numpy()
    assert np.allclose(got, np.clip(ref / 255.0 * 1.1, 0, 1), atol=1e-6)


def test_render_refuses_an_image_that_changed_size():
    img = Image.new("RGB", (20, 20))
    p = sample_params(AugmentSpec(), 0, 0, 0, 30, 30)
    with pytest.raises(ValueError, match="changed"):
        render(img, p, 16)
