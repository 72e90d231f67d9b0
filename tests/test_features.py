"""The pre-activation feature equals an independent hand-written forward."""

import pytest
import torch
import torch.nn.functional as F
import torchvision

from kdep_cache.models import FeatureNet, build_student, student_width


def _bn(x, bn):
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def _conv(x, c):
    return F.conv2d(x, c.weight, c.bias, c.stride, c.padding, c.dilation, c.groups)


def _block(x, b, last):
    out = F.relu(_bn(_conv(x, b.conv1), b.bn1))
    out = _bn(_conv(out, b.conv2), b.bn2)
    if hasattr(b, "conv3"):
        out = _bn(_conv(F.relu(out), b.conv3), b.bn3)
    idn = x if b.downsample is None else _bn(_conv(x, b.downsample[0]), b.downsample[1])
    out = out + idn
    return out if last else F.relu(out)


def hand_resnet_preact(net, x):
    x = F.relu(_bn(_conv(x, net.conv1), net.bn1))
    x = F.max_pool2d(x, 3, 2, 1)
    blocks = [b for layer in (net.layer1, net.layer2, net.layer3, net.layer4) for b in layer]
    for i, b in enumerate(blocks):
        x = _block(x, b, last=i == len(blocks) - 1)
    return x.mean(dim=(2, 3))


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_preact_feature_matches_hand_written_forward(name):
    torch.manual_seed(0)
    net = torchvision.models.get_model(name).eval()
    for m in net.modules():  # non-trivial BN statistics so that negatives exist
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.2)
            m.bias.data.normal_(0, 0.2)
    x = torch.randn(3, 3, 64, 48)
    with torch.no_grad():
        out = FeatureNet(net)(x, want_logits=True)
        ref = hand_resnet_preact(net, x)
        tv_logits = net(x)
    assert torch.allclose(out["pre"], ref, atol=1e-5, rtol=1e-4)
    assert (out["pre"] < 0).any()  # it is really taken before the ReLU
    assert torch.allclose(out["logits"], tv_logits, atol=1e-5, rtol=1e-4)
    assert (out["post"] >= 0).all()


def test_mobilenet_v2_preact_is_last_conv_bn_before_relu6():
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v2().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        out = FeatureNet(net)(x, want_logits=True)
        h = net.features[:-1](x)
        last = net.features[-1]
        ref = _bn(_conv(h, last[0]), last[1]).mean(dim=(2, 3))
        tv = net(x)
    assert out["pre"].shape == (2, 1280)
    assert torch.allclose(out["pre"], ref, atol=1e-5)
    assert torch.allclose(out["logits"], tv, atol=1e-5)


def test_student_registry_and_widths():
    assert student_width("resnet18") == 512
    assert student_width("resnet50") == 2048
    assert student_width("mobilenet_v2") == 1280
    from kdep_cache.errors import InputError
    with pytest.raises(InputError, match="known: resnet18"):
        build_student("vgg11")


def test_timm_classifier_prefix_is_the_configured_layer_only():
    """timm names its classifier in pretrained_cfg: a ConvNeXt's head.norm is backbone (its
    absence is an error), only head.fc may be missing (a published feature extractor)."""
    timm = pytest.importorskip("timm")
    from kdep_cache.errors import ArtifactError
    from kdep_cache.models.weights import classifier_prefixes, fit_state_dict
    net = timm.create_model("test_convnext")
    assert classifier_prefixes(net) == ("head.fc.",)
    assert classifier_prefixes(torchvision.models.resnet18()) == ("fc.", "classifier.", "_fc.")
    sd = net.state_dict()
    no_fc = {k: v for k, v in sd.items() if not k.startswith("head.fc.")}
    assert fit_state_dict(timm.create_model("test_convnext"), no_fc, "w") is False
    no_norm = {k: v for k, v in sd.items() if not k.startswith("head.norm.")}
    with pytest.raises(ArtifactError, match="missing keys head.norm.weight, head.norm.bias"):
        fit_state_dict(timm.create_model("test_convnext"), no_norm, "w")


def test_timm_student_registry():
    from kdep_cache.errors import InputError
    from kdep_cache.models import check_student
    assert check_student("timm:test_vit") == "timm:test_vit"
    assert student_width("timm:test_vit") == 64  # embed_dim: the CLS token's width
    with pytest.raises(InputError, match="or timm:NAME"):
        check_student("vit_tiny")
