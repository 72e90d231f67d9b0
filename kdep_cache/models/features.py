"""The pooled penultimate feature taken BEFORE the last activation, for any family.

A forward hook on torchvision's in-place ReLU would see post-ReLU values, so the last
block is recomputed explicitly here instead:
- ResNet family: the last block of ``layer4`` up to ``out += identity`` (no final ReLU);
- MobileNetV2/V3: the last 1x1 conv + BN of ``features`` (before ReLU6 / Hardswish);
- EfficientNet-Lite: ``_conv_head`` + ``_bn1`` (before ReLU6);
- TorchScript: whatever the scripted module returns (feature, or (feature, logits));
- timm (``timm_cnn`` / ``timm_vit``) and Hugging Face (``hf``): see ``timm_models.py`` and
  ``hf_models.py`` (CNNs: pooled pre-activation; ViTs: final-layer CLS token, or the mean
  patch token with ``feature="mean-patch"``).
Pooling is adaptive (any input size). ``post`` = pool(act(map)) feeds the classifier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import MobileNetV2, MobileNetV3, ResNet

from . import hf_models, timm_models


def family_of(net: nn.Module) -> str:
    if isinstance(net, ResNet):
        return "resnet"
    if isinstance(net, (MobileNetV2, MobileNetV3)):
        return "mobilenet"
    if type(net).__name__ == "EfficientNet" and hasattr(net, "_conv_head"):
        return "efficientnet_lite"
    if isinstance(net, torch.jit.ScriptModule):
        return "torchscript"
    if timm_models.is_timm(net):
        return "timm_vit" if timm_models.is_token_model(net) else "timm_cnn"
    if hf_models.is_hf(net):
        return "hf"
    raise TypeError(f"unsupported network type {type(net).__name__}")


def _resnet_last_block_preact(block: nn.Module, x: torch.Tensor) -> torch.Tensor:
    identity = x if block.downsample is None else block.downsample(x)
    out = block.relu(block.bn1(block.conv1(x)))
    out = block.bn2(block.conv2(out))
    if hasattr(block, "conv3"):  # Bottleneck
        out = block.bn3(block.conv3(block.relu(out)))
    return out + identity


class FeatureNet(nn.Module):
    """Wrap ``net``; ``forward(x)`` returns a dict with ``pre``, ``post`` and ``logits``.
    ``feature`` picks a ViT's token feature (``cls`` default, ``mean-patch``)."""

    def __init__(self, net: nn.Module, feature: str | None = None):
        super().__init__()
        self.net = net
        self.family = family_of(net)
        self.adapter = None  # timm / Hugging Face: the feature is taken there
        if self.family.startswith("timm"):
            self.adapter = timm_models.TimmFeatures(net, feature)
        elif self.family == "hf":
            self.adapter = hf_models.HFFeatures(net, feature)
        elif feature is not None:
            raise ValueError(f"feature {feature!r} applies to timm / Hugging Face ViTs only")
        self.dim = self._infer_dim()
        self.map_tap = nn.Identity()  # the last feature map passes here (models/taps.py hooks it)

    @property
    def feature_layer(self) -> str | None:
        return self.adapter.layer if self.adapter else None

    def _infer_dim(self) -> int | None:
        if self.adapter is not None:
            return self.adapter.dim
        n = self.net
        if self.family == "resnet":
            return n.fc.in_features
        if self.family == "mobilenet":
            return n.features[-1][0].out_channels
        if self.family == "efficientnet_lite":
            return n._conv_head.out_channels
        return None  # torchscript: known after a forward

    @property
    def num_classes(self) -> int | None:
        if self.adapter is not None:
            return self.adapter.num_classes
        n = self.net
        head = {"resnet": lambda: n.fc, "mobilenet": lambda: n.classifier[-1],
                "efficientnet_lite": lambda: n._fc}.get(self.family)
        return head().out_features if head else None

    def feature_map(self, x: torch.Tensor) -> tuple[torch.Tensor, callable]:
        """Pre-activation last feature map and the activation that follows it."""
        n = self.net
        if self.family == "resnet":
            x = n.maxpool(n.relu(n.bn1(n.conv1(x))))
            x = n.layer3(n.layer2(n.layer1(x)))
            x = n.layer4[:-1](x)
            return _resnet_last_block_preact(n.layer4[-1], x), F.relu
        if self.family == "mobilenet":
            x = n.features[:-1](x)
            last = n.features[-1]
            act = last[2] if len(last) > 2 else (lambda t: t)
            return last[1](last[0](x)), (lambda t, a=act: a(t.clone()))
        if self.family == "efficientnet_lite":
            x = n._swish(n._bn0(n._conv_stem(x)))
            for idx, block in enumerate(n._blocks):
                rate = n._global_params.drop_connect_rate
                x = block(x, drop_connect_rate=rate * idx / len(n._blocks) if rate else None)
            return n._bn1(n._conv_head(x)), F.relu6
        raise TypeError("feature_map is not available for TorchScript teachers")

    def forward(self, x: torch.Tensor, want_logits: bool = False, want_post: bool = False
                ) -> dict:
        if self.adapter is not None:
            return self.adapter(x, want_logits, want_post)
        if self.family == "torchscript":
            out = self.net(x)
            pre, logits = (out if isinstance(out, (tuple, list)) else (out, None))[:2]
            return {"pre": pre.flatten(1), "post": None, "logits": logits}
        fmap, act = self.feature_map(x)
        fmap = self.map_tap(fmap)
        pre = torch.flatten(F.adaptive_avg_pool2d(fmap, 1), 1)
        out = {"pre": pre, "post": None, "logits": None}
        if want_logits or want_post:
            out["post"] = torch.flatten(F.adaptive_avg_pool2d(act(fmap), 1), 1)
        if want_logits:
            out["logits"] = self.head(out["post"])
        return out

    def head(self, post: torch.Tensor) -> torch.Tensor:
        n = self.net
        if self.family == "resnet":
            return n.fc(post)
        if self.family == "mobilenet":
            return n.classifier(post)
        return n._fc(n._dropout(post))
