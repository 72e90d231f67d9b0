"""Input normalization of a teacher: a named preset, or the checkpoint's own mean/std.

A cache records the teacher's ``norm`` (a preset name, or where the values came from,
e.g. ``timm:pretrained_cfg``) and, for non-preset values, ``mean`` and ``std`` themselves.
:func:`normalization` is the one lookup every reader uses; caches written before mean/std
were recorded hold a preset name only, which still resolves.
"""

from __future__ import annotations

from ..errors import ArtifactError, InputError

NORMALIZATIONS = {
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # EfficientNet-Lite (TF): (x - 127) / 128 on 0..255 pixels
    "lite": ((127 / 255,) * 3, (128 / 255,) * 3),
}


def check_preset(norm: str) -> str:
    if norm not in NORMALIZATIONS:
        raise InputError(f"unknown normalization {norm!r}; known: {', '.join(NORMALIZATIONS)}")
    return norm


def as_mean_std(mean, std, what: str) -> tuple[tuple, tuple]:
    """Validate 3 channel means and 3 positive stds (from a checkpoint config)."""
    try:
        m, s = tuple(float(v) for v in mean), tuple(float(v) for v in std)
    except (TypeError, ValueError):
        raise InputError(f"{what}: mean/std are not numbers ({mean!r}, {std!r})") from None
    if len(m) != 3 or len(s) != 3 or min(s) <= 0:
        raise InputError(f"{what}: need 3 means and 3 positive stds, got {m}, {s}")
    return m, s


def normalization(teacher: dict) -> tuple[tuple, tuple]:
    """``(mean, std)`` of a teacher identity (``TeacherInfo.to_json()`` / cache settings)."""
    if teacher.get("mean") is not None and teacher.get("std") is not None:
        return tuple(teacher["mean"]), tuple(teacher["std"])
    norm = teacher.get("norm")
    if norm not in NORMALIZATIONS:
        raise ArtifactError(f"teacher normalization {norm!r} is neither a known preset "
                            f"({', '.join(NORMALIZATIONS)}) nor recorded as mean/std values")
    return NORMALIZATIONS[norm]
