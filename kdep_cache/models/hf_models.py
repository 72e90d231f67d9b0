"""Hugging Face teachers (``hf:DIR``): a local folder (``config.json``, ``model.safetensors``
or ``pytorch_model.bin``, ``preprocessor_config.json``), read with ``local_files_only`` and
``HF_HUB_OFFLINE=1``: nothing is downloaded.

Features (``pre``; there is no activation between them and a head, so ``post`` = ``pre``):
- ViT (``ViTModel``), DINOv2 (``Dinov2Model``): ``last_hidden_state[:, 0]``, the final-layer
  CLS token after the final ``layernorm`` (what ``*ForImageClassification`` feeds its head;
  ViT's tanh ``pooler`` is not used), or the mean of the patch tokens (``mean-patch``).
- CLIP vision (``CLIPVisionModel``, also from a full CLIP folder: the text tower is ignored):
  ``pooler_output`` = ``post_layernorm(CLS)``, what ``visual_projection`` sees; ``mean-patch``
  = mean of ``last_hidden_state``'s patch tokens (CLIP applies post_layernorm to CLS only).
- ConvNeXt (``ConvNextModel``): ``pooler_output`` = LayerNorm(global average pool), what its
  classifier sees (no activation after the last stage).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import torch
from torch import nn

from ..errors import ArtifactError, InputError
from ..storage.fsio import sha256_file
from .normalization import as_mean_std

PREFIX = "hf:"
FAMILIES = {"vit": "vit", "dinov2": "vit", "clip": "clip", "clip_vision_model": "clip",
            "convnext": "convnext"}
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
# keys a vision backbone legitimately drops from a checkpoint saved with a head / text tower
_DROPPED = ("classifier.", "text_model.", "text_projection.", "visual_projection.",
            "logit_scale", "pooler.")
from .timm_models import VIT_FEATURES  # noqa: E402,F401  (defined once, there)

HF_FEATURES = ("cls", "mean-patch")  # the head-input feature is the default (cls / pooled)


def _transformers():
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        import transformers
    except ImportError:
        raise InputError("hf: teachers need the transformers package (pip install "
                         "'kdep-cache[hf]')") from None
    transformers.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _weight_files(d: Path) -> list[Path]:
    for name in WEIGHT_FILES:
        if (d / name).is_file():
            return [d / name]
    index = sorted(d.glob("model-*-of-*.safetensors"))
    if index:
        return index
    raise InputError(f"hf:{d} holds no {' or '.join(WEIGHT_FILES)}: save the model there with "
                     "model.save_pretrained(DIR)")


def weights_sha256(files: list[Path]) -> str:
    """sha256 of the weights file (of the names + sha256s of the shards, if sharded)."""
    digests = [sha256_file(f) for f in files]
    if len(files) == 1:
        return digests[0]
    return hashlib.sha256("".join(f"{f.name}:{d}\n" for f, d in zip(files, digests)).encode()
                          ).hexdigest()


def load_teacher(spec_dir: str, weights: str | None):
    """``(net, weight files)`` for ``--teacher hf:DIR``."""
    d = Path(spec_dir)
    if not (d / "config.json").is_file():
        raise InputError(f"hf:{spec_dir} is not a local Hugging Face folder with config.json; "
                         "nothing is downloaded: where there is internet run "
                         f"AutoModel.from_pretrained('{spec_dir}').save_pretrained(DIR) and "
                         "AutoImageProcessor.from_pretrained(...).save_pretrained(DIR), then "
                         "pass --teacher hf:DIR")
    refuse_custom_code(d)
    files = _weight_files(d)
    if weights is not None and Path(weights).resolve() not in [x.resolve() for x in [d, *files]]:
        raise InputError(f"--teacher-weights is not used with hf:{spec_dir} (its weights are "
                         f"{files[0].name} inside the folder)")
    tf = _transformers()
    try:
        cfg = tf.AutoConfig.from_pretrained(d, local_files_only=True, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as e:
        raise ArtifactError(f"hf:{spec_dir}/config.json: {str(e).splitlines()[0]}") from None
    family = FAMILIES.get(cfg.model_type)
    if family is None:
        raise InputError(f"hf:{spec_dir} is a {cfg.model_type!r} model; supported: "
                         f"{', '.join(FAMILIES)}")
    cls, kw = {"vit": (tf.ViTModel, {"add_pooling_layer": False}),
               "dinov2": (tf.Dinov2Model, {}), "clip": (tf.CLIPVisionModel, {}),
               "clip_vision_model": (tf.CLIPVisionModel, {}),
               "convnext": (tf.ConvNextModel, {})}[cfg.model_type]
    try:
        net, info = cls.from_pretrained(d, local_files_only=True, output_loading_info=True,
                                        trust_remote_code=False, **kw)
    except (OSError, ValueError, RuntimeError) as e:
        raise ArtifactError(f"hf:{spec_dir}: the weights do not load: "
                            f"{str(e).splitlines()[0]}") from None
    bad = [f"missing keys {_few(info['missing_keys'])}" if info["missing_keys"] else "",
           f"unexpected keys {_few(info['unexpected_keys'], _DROPPED)}"
           if _few(info["unexpected_keys"], _DROPPED) else "",
           f"shape mismatch {_few([str(k) for k in info['mismatched_keys']])}"
           if info["mismatched_keys"] else ""]
    if any(bad):
        raise ArtifactError(f"hf:{spec_dir} weights do not fit {cls.__name__}: "
                            + "; ".join(b for b in bad if b))
    net.kdep_family = family
    return net.float(), files


def refuse_custom_code(d: Path) -> None:
    """A folder whose config names its own code (``auto_map``) is refused before transformers
    reads it: transformers would ask to run that code (and a ``yes |`` would run it)."""
    import json
    for name in ("config.json", "preprocessor_config.json"):
        p = d / name
        try:
            cfg = json.loads(p.read_text()) if p.is_file() else {}
        except (OSError, ValueError) as e:
            raise ArtifactError(f"hf:{d}/{name} is not readable JSON ({e})") from None
        if isinstance(cfg, dict) and ("auto_map" in cfg or "custom_pipelines" in cfg):
            raise InputError(f"hf:{d}/{name} names custom code (auto_map): kdep-cache never "
                             "runs a model folder's own code; use a folder of a built-in "
                             "transformers model (vit, dinov2, clip, convnext)")


def _few(keys, ignore: tuple = (), n: int = 4) -> str:
    keys = sorted(k for k in keys if not str(k).startswith(ignore))
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more if keys else ""


def preprocessor(spec_dir: str, required: bool) -> tuple[tuple, tuple, int] | None:
    """Mean, std and input size (crop size if it centre-crops, else resize size) from
    ``preprocessor_config.json``, the image processor's own config (None if absent and not
    ``required``)."""
    d = Path(spec_dir)
    p = d / "preprocessor_config.json"
    if not p.is_file() and not required:
        return None
    if not p.is_file():
        raise InputError(f"hf:{d} has no preprocessor_config.json (its input mean/std and size):"
                         " save it with AutoImageProcessor.from_pretrained(...).save_pretrained"
                         "(DIR), or pass --norm imagenet")
    import json
    try:
        cfg = json.loads(p.read_text())
        mean, std = as_mean_std(cfg["image_mean"], cfg["image_std"], str(p))
    except (ValueError, KeyError) as e:
        raise ArtifactError(f"{p} has no usable image_mean/image_std ({e})") from None
    size = cfg.get("crop_size") if cfg.get("do_center_crop") else cfg.get("size")
    if isinstance(size, dict):
        size = size.get("height") or size.get("shortest_edge")
    return mean, std, int(size) if size else 224


def is_hf(net: nn.Module) -> bool:
    return type(net).__module__.startswith("transformers.")


class HFFeatures:
    """The feature of one Hugging Face backbone; see the module docstring."""

    def __init__(self, net: nn.Module, feature: str | None = None):
        self.net, self.family = net, getattr(net, "kdep_family", FAMILIES.get(
            net.config.model_type, "?"))
        conv = self.family == "convnext"
        self.feature = feature or ("pooled" if conv else "cls")
        if conv and self.feature != "pooled":
            raise InputError(f"feature {feature!r} applies to ViTs only; ConvNeXt gives its "
                             "pooled, normed feature")
        if not conv and self.feature not in HF_FEATURES:
            raise InputError(f"feature {feature!r}: use one of {', '.join(HF_FEATURES)}")
        c = net.config
        self.dim = int(c.hidden_sizes[-1] if conv else c.hidden_size)
        self.num_classes = None  # backbones only: no classifier, no logits

    @property
    def layer(self) -> str:
        kind = type(self.net).__name__
        if self.family == "convnext":
            return f"hf {kind}: pooler_output = layernorm(avg-pooled last stage)"
        if self.feature == "mean-patch":
            return f"hf {kind}: mean of last_hidden_state patch tokens"
        if self.family == "clip":
            return f"hf {kind}: pooler_output = post_layernorm(final-layer CLS token)"
        return f"hf {kind}: last_hidden_state[:, 0], CLS token after the final layernorm"

    def __call__(self, x: torch.Tensor, want_logits: bool, want_post: bool) -> dict:
        if want_logits:
            raise InputError("hf: teachers are backbones without a classifier: no logits")
        kw = {} if self.family in ("convnext",) or self.net.config.model_type == "dinov2" else {
            "interpolate_pos_encoding": True}
        o = self.net(pixel_values=x.contiguous(), **kw)
        if self.family == "convnext" or (self.family == "clip" and self.feature == "cls"):
            pre = o.pooler_output
        elif self.feature == "cls":
            pre = o.last_hidden_state[:, 0]
        else:
            pre = o.last_hidden_state[:, 1 + getattr(self.net.config, "num_register_tokens", 0):
                                      ].mean(1)
        return {"pre": pre, "post": pre if want_post else None, "logits": None}
