"""Option and path checks, torch-free: the CLI runs them before importing torch or touching
``--out``; the library configs call the same functions. Each raises a one-line
:class:`~kdep_cache.errors.InputError` naming the option. The single-value checks are
:mod:`.values` (re-exported here), the teacher-spec ones :mod:`.teacher_spec`.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..errors import InputError
from ..names import HF_PREFIX, LITE_TEACHERS, TIMM_PREFIX, TV_TEACHERS
from . import multilayer
from .environment import output
from .limits import (
    MAX_BATCH,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_VIEWS,
    PTS_N_RANGE,
    PTS_T_RANGE,
    batch_memory,
    in_range,
    max_workers,
)
from .stages import own_out
from .teacher_spec import PREFIX as TEACHER_PREFIX
from .teacher_spec import is_teacher, refuse_training
from .values import (  # noqa: F401  (re-exported: the stages import these from checks)
    BACKGROUNDS,
    DEFAULT_BACKGROUND,
    MAX_FILE_MB,
    MIN_IMAGE_SIZE,
    SEED_MAX,
    WEIGHT_SUFFIXES,
    background,
    bounded,
    crop_scale,
    fit_views,
    flag,
    fraction,
    image_size,
    integer,
    momentum,
    nonnegative,
    open_unit,
    pack_spec,
    positive,
    rank_world,
    seed,
    seeds,
    student,
)

# option name -> check, for every numeric option of every command (None = not given)
RULES = {
    "pack": pack_spec,
    "views": lambda k, v: bounded(k, v, 1, MAX_VIEWS),
    "epochs": lambda k, v: bounded(k, v, 1, MAX_EPOCHS),
    "batch_size": lambda k, v: bounded(k, v, 1, MAX_BATCH),
    "shard_size": lambda k, v: bounded(k, v, 1, MAX_BATCH),
    "max_views": lambda k, v: bounded(k, v, 1, MAX_VIEWS),
    "dim": lambda k, v: bounded(k, v, 1, MAX_DIM),
    "chunk": lambda k, v: bounded(k, v, 1, MAX_BATCH),
    "workers": lambda k, v: bounded(k, v, 0, max_workers()),
    "image_size": image_size, "seed": seed, "split_seed": seed, "seeds": seeds,
    "lr": positive, "lr_step": positive, "loss_weight": positive, "temperature": positive,
    "pts_t": lambda k, v: in_range(k, positive(k, v), *PTS_T_RANGE),
    "pts_n": lambda k, v: in_range(k, positive(k, v), *PTS_N_RANGE),
    "weight_decay": nonnegative, "momentum": momentum,
    "fraction": fraction, "test_fraction": open_unit, "fit_views": fit_views,
    "tsne_points": lambda k, v: bounded(k, v, 0, 10**6), "max_file_mb": positive,
    "max_images": lambda k, v: bounded(k, v, 2, 10**7),
}


def check_options(opts: dict) -> None:
    """Apply :data:`RULES` to every given option of ``opts`` (a config's fields or the CLI's
    keyword arguments), plus the cross-option rules (crop scale, rank/world size)."""
    for key, value in opts.items():
        if value is not None and key in RULES:
            RULES[key](key, value)
    if opts.get("crop_scale") is not None:
        crop_scale(*opts["crop_scale"])
    if "rank" in opts or "world_size" in opts:
        rank_world(opts.get("rank", 0), opts.get("world_size", 1))
    if "background" in opts and opts["background"] is not None:
        background(opts["background"])
    multilayer.check(opts)  # --layers / --grid / --match / --layer-weights (issue 27)
    batch_memory(opts)


def looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.lower().endswith(WEIGHT_SUFFIXES)


def existing(key: str, path, kind: str = "dir") -> None:
    """``path`` (if given) exists and is a directory (``kind='dir'``), a file, or either."""
    if path is None:
        return
    p = Path(path)
    ok = {"dir": p.is_dir, "file": p.is_file, "any": p.exists}[kind]()
    if not ok:
        what = {"dir": "folder", "file": "file", "any": "path"}[kind]
        why = "is not a " + what if p.exists() else "does not exist"
        raise InputError(f"{flag(key)} {path} {why}")


def check_paths(opts: dict, dirs=(), files=(), weights=()) -> None:
    """Existence of the input paths among ``opts``; ``weights`` options (teachers, weights)
    are checked only when they look like a path (a torchvision name or weights name,
    ``random`` and ``timm:NAME`` are not one; ``hf:DIR`` must be a folder)."""
    for key in dirs:
        existing(key, opts.get(key), "dir")
    for key in files:
        existing(key, opts.get(key), "file")
    for key in weights:
        v = opts.get(key)
        if v is None or str(v).startswith(TIMM_PREFIX):  # timm:NAME is resolved by timm
            continue
        if str(v).startswith(HF_PREFIX):  # hf:DIR, a local Hugging Face folder
            existing(key, str(v)[len(HF_PREFIX):], "dir")
        elif looks_like_path(str(v)):
            existing(key, v, "any")


# one call per command: options, then input paths (the CLI runs these before any import)
def did_you_mean(text: str, choices) -> str:
    near = difflib.get_close_matches(text, list(choices), n=3, cutoff=0.6)
    return f"; did you mean {' or '.join(near)}?" if near else ""


def teacher_name(spec) -> None:
    """``--teacher``: a torchvision / EfficientNet-Lite name, ``timm:NAME``, ``hf:DIR`` or a
    TorchScript file; an unknown name is refused here, before torch is imported."""
    if spec is None or str(spec).startswith((TIMM_PREFIX, HF_PREFIX)):
        return
    spec = str(spec)
    if (spec in TV_TEACHERS or spec.lower().replace("_", "-") in LITE_TEACHERS
            or looks_like_path(spec) or os.path.exists(spec)):
        return
    raise InputError(f"unknown teacher {spec!r}{did_you_mean(spec, TV_TEACHERS + LITE_TEACHERS)} "
                     f"(a torchvision name: {', '.join(TV_TEACHERS)}; {', '.join(LITE_TEACHERS)};"
                     " a TorchScript file; timm:NAME or hf:DIR)")


def extract_args(o: dict) -> None:
    check_options(o)
    teacher_name(o.get("teacher"))
    check_paths(o, dirs=("data",), files=("file_list",), weights=("teacher", "teacher_weights"))
    output("out", o.get("out"))
    own_out("out", o.get("out"), "extract")


def fit_args(o: dict) -> None:
    check_options(o)
    if (o.get("dim") is None) == (o.get("student") is None):
        raise InputError("give exactly one of --dim D or --student NAME")
    if o.get("student") is not None:
        student("student", o["student"])
    check_paths(o, dirs=("cache",))
    output("out", o.get("out"))
    own_out("out", o.get("out"), "fit-svd")


def train_args(o: dict) -> None:
    check_options(o)
    student("student", o["student"])
    check_paths(o, dirs=("targets", "cache", "data"), weights=("teacher_weights",))
    output("out", o.get("out"))
    own_out("out", o.get("out"), "train-student")


def transfer_args(o: dict) -> None:
    check_options(o)
    spec = str(o.get("student", ""))
    if spec.startswith("random:"):
        student("student", spec.split(":", 1)[1])
    elif is_teacher(spec):  # teacher:CACHE (transfer/teacher.py, checks/teacher_spec.py): never fine-tuned
        refuse_training(spec, o.get("mode"), o.get("task"))
        existing("student", spec[len(TEACHER_PREFIX):], "dir")
    else:
        existing("student", spec, "any")
    if o.get("arch") is not None:
        student("arch", o["arch"])
    check_paths(o, dirs=("data",))
    output("out", o.get("out"))
    own_out("out", o.get("out"), "transfer")


def diagnose_args(o: dict) -> None:
    check_options(o)
    output("out", o.get("out"))
    own_out("out", o.get("out"), "diagnose")
