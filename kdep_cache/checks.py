"""Option and path checks, torch-free: the CLI runs them before importing torch or touching
``--out``; the library configs call the same functions. Each raises a one-line
:class:`~kdep_cache.errors.InputError` naming the option.

Seeds are integers in ``0..SEED_MAX`` (2**32 - 1): ``np.random.default_rng`` refuses
negative seeds, scikit-learn's ``random_state`` (the linear probe) needs ``< 2**32``, and
``torch.manual_seed`` and the epoch-order seed ``seed * 1_000_003 + epoch`` stay far below
2**63 with it.
"""

from __future__ import annotations

import difflib
import math
import numbers
import os
from pathlib import Path

from .errors import InputError
from .limits import (
    MAX_BATCH,
    MAX_DIM,
    MAX_EPOCHS,
    MAX_IMAGE_SIZE,
    MAX_VIEWS,
    MAX_WORLD_SIZE,
    PTS_N_RANGE,
    PTS_T_RANGE,
    batch_memory,
    in_range,
    max_workers,
)
from .names import HF_PREFIX, KNOWN_STUDENTS, LITE_TEACHERS, TIMM_PREFIX, TV_TEACHERS
from .oschecks import output
from .stages import own_out

SEED_MAX = 2**32 - 1
MIN_IMAGE_SIZE = 32  # teachers and students downsample by 32
BACKGROUNDS = {"black": (0, 0, 0), "white": (255, 255, 255), "gray": (128, 128, 128)}
DEFAULT_BACKGROUND = "gray"  # measured: see benchmarks/results/background.json
MAX_FILE_MB = 1024  # default extract --max-file-mb: 4x an uncompressed RGB TIFF at PIL's
                    # bomb limit (89.5 M pixels); larger files are skipped unread
WEIGHT_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors", ".tar", ".pkl")


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _number(key: str, v) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
        raise InputError(f"{flag(key)} must be a number, got {v!r}")
    if not math.isfinite(v):
        raise InputError(f"{flag(key)} must be a finite number, got {v}")
    return float(v)


def integer(key: str, v, lo: int, hi: int | None = None) -> int:
    """``v`` is an integer in ``lo..hi``."""
    if isinstance(v, bool) or not isinstance(v, numbers.Integral):
        raise InputError(f"{flag(key)} must be an integer, got {v!r}")
    if v < lo or (hi is not None and v > hi):
        rng = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise InputError(f"{flag(key)} must be {rng}, got {v}")
    return int(v)


def bounded(key: str, v, lo: int, hi: int) -> int:
    """An integer ``>= lo`` (said so when below) and ``<= hi`` (an upper bound of
    :mod:`kdep_cache.limits`)."""
    v = integer(key, v, lo)
    if v > hi:
        raise InputError(f"{flag(key)} must be <= {hi}, got {v}")
    return v


def positive(key: str, v) -> float:
    if _number(key, v) <= 0:
        raise InputError(f"{flag(key)} must be > 0, got {v}")
    return float(v)


def nonnegative(key: str, v) -> float:
    if _number(key, v) < 0:
        raise InputError(f"{flag(key)} must be >= 0, got {v}")
    return float(v)


def seed(key: str, v) -> int:
    return integer(key, v, 0, SEED_MAX)


def image_size(key: str, v) -> int:
    if isinstance(v, numbers.Integral) and not isinstance(v, bool) and v < MIN_IMAGE_SIZE:
        raise InputError(f"{flag(key)} {v} is too small: the networks downsample by 32, use "
                         f"at least {MIN_IMAGE_SIZE}")
    return bounded(key, v, MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)


def fraction(key: str, v) -> float:
    """``0 < v <= 1``."""
    if not 0 < _number(key, v) <= 1:
        raise InputError(f"{flag(key)} must be in (0, 1], got {v}")
    return float(v)


def open_unit(key: str, v) -> float:
    """``0 < v < 1`` (a share of a split that must leave both parts non-empty)."""
    if not 0 < _number(key, v) < 1:
        raise InputError(f"{flag(key)} must be in (0, 1), got {v}")
    return float(v)


def momentum(key: str, v) -> float:
    if not 0 <= _number(key, v) < 1:
        raise InputError(f"{flag(key)} must be in [0, 1), got {v}")
    return float(v)


def crop_scale(lo, hi) -> tuple[float, float]:
    """RandomResizedCrop area range: finite, ``0 < lo <= hi <= 1``."""
    a, b = _number("crop_scale", lo), _number("crop_scale", hi)
    if not 0 < a <= b <= 1:
        raise InputError(f"--crop-scale LO HI must satisfy 0 < LO <= HI <= 1, got {lo} {hi}")
    return a, b


def rank_world(rank, world_size) -> None:
    bounded("world_size", world_size, 1, MAX_WORLD_SIZE)
    integer("rank", rank, 0, world_size - 1)


def seeds(key: str, values) -> tuple[int, ...]:
    vals = tuple(seed(key, v) for v in values)
    if not vals or len(set(vals)) != len(vals):
        raise InputError(f"{flag(key)} must be distinct integers, got {list(values)}")
    return vals


def fit_views(key: str, text: str) -> None:
    """``all`` or comma-separated view indices (checked against K once the cache is open)."""
    parts = [t.strip() for t in str(text).split(",")]
    if text != "all" and not all(t.isdigit() for t in parts):
        raise InputError(f"{flag(key)} must be 'all' or view indices like 0,1; got {text!r}")


def student(key: str, name: str) -> None:
    """A torchvision student name, or ``timm:NAME`` (that one is resolved by timm later)."""
    if name.startswith(TIMM_PREFIX) and len(name) > len(TIMM_PREFIX):
        return
    if name not in KNOWN_STUDENTS:
        raise InputError(f"unknown {flag(key)} {name!r}; known: {', '.join(KNOWN_STUDENTS)} "
                         f"or {TIMM_PREFIX}NAME")


def background(text) -> tuple[int, int, int]:
    """``black``, ``white``, ``gray`` or ``R,G,B`` (0-255 each) -> an RGB triple."""
    if isinstance(text, (tuple, list)):
        parts = list(text)
    elif str(text).strip().lower() in BACKGROUNDS:
        return BACKGROUNDS[str(text).strip().lower()]
    else:
        parts = str(text).split(",")
    try:
        rgb = tuple(int(str(p).strip()) for p in parts)
    except ValueError:
        rgb = ()
    if len(rgb) != 3 or not all(0 <= c <= 255 for c in rgb):
        raise InputError(f"--background must be black, white, gray or R,G,B with 0-255 each; "
                         f"got {text!r}")
    return rgb


# option name -> check, for every numeric option of every command (None = not given)
RULES = {
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
    from .transfer.reference import PREFIX, is_teacher, refuse_training
    check_options(o)
    spec = str(o.get("student", ""))
    if spec.startswith("random:"):
        student("student", spec.split(":", 1)[1])
    elif is_teacher(spec):  # teacher:CACHE (transfer/teacher.py): never fine-tuned
        refuse_training(spec, o.get("mode"), o.get("task"))
        existing("student", spec[len(PREFIX):], "dir")
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
