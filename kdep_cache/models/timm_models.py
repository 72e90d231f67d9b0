"""timm teachers and students (``timm:NAME``), built with ``pretrained=False`` and filled from
local weights only: nothing is downloaded.

Features (what :class:`~kdep_cache.models.FeatureNet` returns as ``pre``):
- CNNs: the avg-pooled INPUT of the last activation module that produces
  ``forward_features``' output (found once by a probe forward): ResNet = the last block's
  ``act`` after the residual add (pre-ReLU, as for torchvision); EfficientNet / MobileNetV3
  = the ``act`` inside ``bn2`` / the last ``BatchNormAct2d`` (BN output before SiLU /
  Hardswish). A model whose feature map does not end in an activation module (ConvNeXt:
  stages -> ``norm_pre`` = Identity) gives ``forward_head(pre_logits=True)``: pooled, then
  the head's LayerNorm -- exactly what its classifier sees.
- ViTs: what the head sees by default. With CLS-token pooling and no ``fc_norm`` that is
  ``forward_features(x)[:, 0]``, the final-layer CLS token after ``model.norm`` (feature
  ``cls``); a ViT that pools otherwise or normalises after pooling (BEiT, MAE fine-tunes,
  ``*_gap``: ``fc_norm``; attention pooling ``map``) gives ``forward_head(pre_logits=True)``
  (feature ``pre-logits``), since its CLS token / token mean is never normalised the way the
  head sees it. ``--teacher-feature cls`` / ``mean-patch`` (the mean of the patch tokens after
  ``model.norm``, prefix tokens excluded) choose a token feature explicitly.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import InputError
from ..names import TEACHER_FEATURES as VIT_FEATURES
from .normalization import as_mean_std
from .weights import fit_state_dict, load_state_dict_file

log = logging.getLogger(__name__)
PREFIX = "timm:"
_DYNAMIC_SIZE = ("timm.models.vision_transformer", "timm.models.deit", "timm.models.eva")
_ACTS = (nn.ReLU, nn.ReLU6, nn.SiLU, nn.GELU, nn.Hardswish, nn.LeakyReLU, nn.ELU, nn.Mish,
         nn.PReLU, nn.Hardtanh, nn.Tanh, nn.Sigmoid, nn.SELU, nn.CELU)
_PASS = (nn.Identity, nn.Dropout)


def _timm():
    try:
        import timm
    except ImportError:
        raise InputError("timm: models need the timm package (pip install "
                         "'kdep-cache[timm]')") from None
    return timm


def create(name: str, num_classes: int | None = None) -> nn.Module:
    """``timm.create_model(name, pretrained=False)``; ViTs with ``dynamic_img_size`` (any input
    size; the state_dict is unchanged, position embeddings are interpolated at run time)."""
    timm = _timm()
    arch = timm.models.split_model_name_tag(name)[0]
    if not timm.is_model(arch):
        raise InputError(f"timm has no model {name!r} (see timm.list_models('*{arch[:6]}*'))")
    kw = {} if num_classes is None else {"num_classes": num_classes}
    if timm.models.model_entrypoint(arch).__module__ in _DYNAMIC_SIZE:
        kw["dynamic_img_size"] = True
    return timm.create_model(name, pretrained=False, **kw)


def load_teacher(name: str, weights: str | None) -> tuple[nn.Module, str | None, str]:
    """``(net, weights path or None, weights description)`` for ``--teacher timm:NAME``."""
    if weights is None:
        raise InputError(f"teacher timm:{name} needs --teacher-weights FILE (.safetensors or a "
                         "state_dict; nothing is downloaded): save it once where there is "
                         f"internet, e.g. safetensors.torch.save_file(timm.create_model('{name}', "
                         "pretrained=True).state_dict(), 'w.safetensors')")
    net = create(name)
    if weights == "random":
        return net, None, "random"
    has_head = fit_state_dict(net, load_state_dict_file(weights),
                              f"--teacher-weights {weights} for timm:{name}")
    net.kdep_has_head = has_head
    return net, weights, str(Path(weights).resolve())


def data_config(net: nn.Module, spec: str = "", weighted: bool = False
                ) -> tuple[tuple, tuple, int, str | None]:
    """``(mean, std, input size, tag)`` from the pretrained config of the tag in ``timm:NAME.TAG``
    (timm's default tag for the architecture when NAME has none: warned about, since weights
    from another tag, e.g. a CLIP or in21k one, may need another mean/std)."""
    cfg = _timm().data.resolve_model_data_config(net)
    mean, std = as_mean_std(cfg["mean"], cfg["std"], "timm pretrained_cfg")
    tag = (getattr(net, "pretrained_cfg", None) or {}).get("tag")
    if weighted and "." not in spec.removeprefix(PREFIX):
        log.warning("%s names no pretrained tag: mean %s, std %s and size %d are those of "
                    "timm's default tag %r; if the weights come from another tag, name it "
                    "(%s.TAG) or pass --norm", spec, _short(mean), _short(std),
                    int(cfg["input_size"][-1]), tag, spec)
    return mean, std, int(cfg["input_size"][-1]), tag


def _short(v) -> str:
    return "(" + ", ".join(f"{x:.3g}" for x in v) + ")"


def is_timm(net: nn.Module) -> bool:
    return type(net).__module__.startswith("timm.")


def is_token_model(net: nn.Module) -> bool:
    return hasattr(net, "num_prefix_tokens") and hasattr(net, "patch_embed")


def _has_fc_norm(net: nn.Module) -> bool:
    return not isinstance(getattr(net, "fc_norm", None), (nn.Identity, type(None)))


def cls_is_head_input(net: nn.Module) -> bool:
    """The head sees exactly ``forward_features(x)[:, 0]``: CLS-token pooling, no fc_norm."""
    return (getattr(net, "global_pool", None) == "token" and not _has_fc_norm(net)
            and getattr(net, "cls_token", None) is not None)


def _is_activation(m: nn.Module) -> bool:
    return isinstance(m, _ACTS) or type(m).__module__.startswith("timm.layers.activations")


class TimmFeatures:
    """The feature of one timm network; see the module docstring for what is taken."""

    def __init__(self, net: nn.Module, feature: str | None = None):
        self.net, self.token = net, is_token_model(net)
        self.feature = feature or ("cls" if self.token else "pre-activation")
        self._grabbed: torch.Tensor | None = None
        self.act_name: str | None = None
        if self.token:
            default = "cls" if cls_is_head_input(net) else "pre-logits"
            self.feature = feature or default
            if feature == "cls" and default != "cls":
                log.warning("%s pools with %s%s: its head never sees the raw CLS token "
                            "(--teacher-feature pre-logits gives what the head sees)",
                            type(net).__name__, getattr(net, "global_pool", "?"),
                            " + fc_norm" if _has_fc_norm(net) else "")
            if self.feature not in VIT_FEATURES:
                raise InputError(f"feature {feature!r} for a ViT: use one of "
                                 f"{', '.join(VIT_FEATURES)}")
            if self.feature == "cls" and getattr(net, "cls_token", None) is None:
                raise InputError(f"{type(net).__name__} has no CLS token: use the feature "
                                 "mean-patch")
            self.dim = int(getattr(net, "head_hidden_size", None) or net.num_features)
            return
        if feature not in (None, "pre-activation"):
            raise InputError(f"feature {feature!r} applies to ViTs only; a CNN gives its "
                             "pooled pre-activation")
        self.act_name, self.dim = self._probe()
        if self.act_name is not None:
            net.get_submodule(self.act_name).register_forward_pre_hook(self._grab)

    def _grab(self, module, args):
        self._grabbed = args[0].clone()  # before an in-place activation overwrites it

    def _probe(self) -> tuple[str | None, int]:
        """Find the leaf module whose output IS ``forward_features``' output (last call)."""
        net, calls = self.net, []
        hooks = [m.register_forward_hook(lambda mod, i, o, n=n: calls.append((n, mod, o)))
                 for n, m in net.named_modules() if not any(True for _ in m.children())]
        was = net.training
        p = next(net.parameters())
        try:
            net.eval()
            with torch.no_grad():
                fmap = net.forward_features(torch.zeros(1, 3, 64, 64, device=p.device))
                head = net.forward_head(fmap, pre_logits=True)
        finally:
            for h in hooks:
                h.remove()
            net.train(was)
        if fmap.ndim != 4:
            raise InputError(f"timm model {type(net).__name__} is neither an NCHW CNN nor a ViT "
                             f"(feature map shape {tuple(fmap.shape)}): not supported")
        last = next(((n, m) for n, m, o in reversed(calls)  # skip pass-through Identity
                     if o is fmap and not isinstance(m, _PASS)), None)
        if last is not None and _is_activation(last[1]):
            return last[0], int(fmap.shape[1])
        return None, int(head.shape[1])

    @property
    def layer(self) -> str:
        kind = type(self.net).__name__
        if self.token:
            if self.feature == "pre-logits":
                how = getattr(self.net, "global_pool", "?")
                norm = " + fc_norm" if _has_fc_norm(self.net) else ""
                return f"timm {kind}: forward_head(pre_logits=True) ({how} pool{norm}), what " \
                       "the head sees"
            return (f"timm {kind}: final-layer CLS token after model.norm, before the head"
                    if self.feature == "cls" else
                    f"timm {kind}: mean of the final-layer patch tokens after model.norm")
        if self.act_name:
            return f"timm {kind}: input of {self.act_name} (pre-activation), avg-pooled"
        return f"timm {kind}: forward_head(pre_logits=True) (no final activation)"

    def __call__(self, x: torch.Tensor, want_logits: bool, want_post: bool) -> dict:
        net = self.net
        out = net.forward_features(x)
        if self.token:
            pre = (out[:, 0] if self.feature == "cls" else
                   out[:, net.num_prefix_tokens:].mean(1) if self.feature == "mean-patch" else
                   net.forward_head(out, pre_logits=True))
            post = pre
        elif self.act_name:
            grabbed, self._grabbed = self._grabbed, None
            pre = torch.flatten(F.adaptive_avg_pool2d(grabbed, 1), 1)
            post = torch.flatten(F.adaptive_avg_pool2d(out, 1), 1)  # pool(act(pre map))
        else:
            pre = post = net.forward_head(out, pre_logits=True)
        logits = net.forward_head(out) if want_logits else None
        return {"pre": pre, "post": post if want_post or want_logits else None,
                "logits": logits}

    @property
    def num_classes(self) -> int | None:
        return int(self.net.num_classes) or None

    def classifier(self) -> nn.Module:
        return self.net.get_classifier()
