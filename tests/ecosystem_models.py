"""Tiny random-init timm and Hugging Face models saved to local files (no network)."""

from __future__ import annotations

import json
from pathlib import Path

import torch

HF_MEAN, HF_STD = [0.40, 0.45, 0.50], [0.20, 0.25, 0.30]  # deliberately not ImageNet's


def _perturb_norms(net: torch.nn.Module, seed: int) -> None:
    """Non-trivial BN / LayerNorm parameters so that features have real negatives."""
    g = torch.Generator().manual_seed(seed)
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=g) * 0.2)
            m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) * 1.5 + 0.5)
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)
        elif isinstance(m, torch.nn.LayerNorm) and m.bias is not None:
            m.bias.data.copy_(torch.randn(m.bias.shape, generator=g) * 0.2)


def timm_weights(name: str, folder: Path, seed: int = 0) -> tuple[torch.nn.Module, Path]:
    """A timm model (``pretrained=False``) and its state_dict saved as safetensors."""
    import timm
    from safetensors.torch import save_file
    torch.manual_seed(seed)
    net = timm.create_model(name, pretrained=False)
    with torch.no_grad():
        _perturb_norms(net, seed)
    path = Path(folder) / f"{name}.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(path))
    return net.eval(), path


_VIT = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
            image_size=32, patch_size=8)


def hf_folder(kind: str, folder: Path, seed: int = 0, preprocessor: bool = True):
    """Save a tiny Hugging Face model of ``kind`` (vit, vit-cls, dinov2, dinov2-wide, clip,
    clip-full, convnext) with a ``preprocessor_config.json``; return (model, folder)."""
    import transformers as tf
    torch.manual_seed(seed)
    if kind == "vit":
        net = tf.ViTModel(tf.ViTConfig(**_VIT), add_pooling_layer=False)
    elif kind == "vit-cls":
        net = tf.ViTForImageClassification(tf.ViTConfig(**_VIT, num_labels=5))
    elif kind == "dinov2":
        net = tf.Dinov2Model(tf.Dinov2Config(**_VIT))
    elif kind == "dinov2-wide":  # wider than a timm test student (64)
        net = tf.Dinov2Model(tf.Dinov2Config(**{**_VIT, "hidden_size": 128}))
    elif kind == "clip":
        net = tf.CLIPVisionModel(tf.CLIPVisionConfig(**_VIT))
    elif kind == "clip-full":
        net = tf.CLIPModel(tf.CLIPConfig(
            text_config=dict(hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                             intermediate_size=32), vision_config=_VIT, projection_dim=8))
    elif kind == "convnext":
        net = tf.ConvNextModel(tf.ConvNextConfig(hidden_sizes=[8, 16, 24, 32],
                                                 depths=[1, 1, 1, 1]))
    else:
        raise ValueError(kind)
    with torch.no_grad():
        _perturb_norms(net, seed)
    d = Path(folder) / kind
    net.save_pretrained(d)
    if preprocessor:
        (d / "preprocessor_config.json").write_text(json.dumps(
            {"image_mean": HF_MEAN, "image_std": HF_STD, "do_center_crop": True,
             "crop_size": {"height": 48, "width": 48}, "size": {"shortest_edge": 56}}))
    return net.eval(), d
