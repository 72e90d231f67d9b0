"""The value checks of single options (torch-free), each raising a one-line
:class:`~kdep_cache.errors.InputError` naming the option.

Seeds are integers in ``0..SEED_MAX`` (2**32 - 1): ``np.random.default_rng`` refuses
negative seeds, scikit-learn's ``random_state`` (the linear probe) needs ``< 2**32``, and
``torch.manual_seed`` and the epoch-order seed ``seed * 1_000_003 + epoch`` stay far below
2**63 with it.
"""

from __future__ import annotations

import math
import numbers

from ..errors import InputError
from ..names import KNOWN_STUDENTS, TIMM_PREFIX
from .limits import MAX_IMAGE_SIZE, MAX_WORLD_SIZE

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
    :mod:`kdep_cache.checks.limits`)."""
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


PACK_MODES = ("auto", "none", "original", "jpeg")  # extract --pack (views/pack.py)
PACK_QUALITY = 90                          # jpeg:SIDE's default quality
PACK_SIDE_RANGE = (MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)


def pack_spec(key: str, text) -> tuple[str, int | None, int | None]:
    """``auto`` | ``none`` | ``original`` | ``jpeg:SIDE[:QUALITY]`` -> (mode, side, quality);
    ``auto`` is resolved against the extraction size (:meth:`PackSpec.resolved`)."""
    parts = str(text).strip().lower().split(":")
    mode = parts[0]
    usage = (f"{flag(key)} must be auto, none, original or jpeg:SIDE[:QUALITY] (SIDE "
             f"{PACK_SIDE_RANGE[0]}..{PACK_SIDE_RANGE[1]} px, QUALITY 1..100, default "
             f"{PACK_QUALITY}); got {text!r}")
    if mode in ("auto", "none", "original") and len(parts) == 1:
        return mode, None, None
    if mode != "jpeg" or len(parts) not in (2, 3):
        raise InputError(usage)
    try:
        side = int(parts[1])
        quality = int(parts[2]) if len(parts) == 3 else PACK_QUALITY
    except ValueError:
        raise InputError(usage) from None
    if not (PACK_SIDE_RANGE[0] <= side <= PACK_SIDE_RANGE[1] and 1 <= quality <= 100):
        raise InputError(usage)
    return mode, side, quality
