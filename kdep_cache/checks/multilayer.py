"""Multi-layer KD options, torch-free (issue 27): ``extract --layers/--grid``,
``fit-svd/train-student --match`` and ``train-student --layer-weights``.

Only the syntax is checked here (before torch is imported); whether the teacher has a layer,
whether a map is at least ``grid`` cells wide and whether a student has a stage are checked
by the stages themselves, still before anything is written.
"""

from __future__ import annotations

import math

from ..errors import InputError

DEFAULT_GRID = 2  # README "Multi-layer KD": 4x the bytes of grid 1, a quarter of grid 4
MAX_GRID = 16     # a 224-px ResNet's layer4 is 7x7: a larger grid is never a real map


def grid(v) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_GRID:
        raise InputError(f"--grid must be an integer in 1..{MAX_GRID}, got {v!r}")
    return v


def _items(key: str, text: str) -> list[str]:
    items = [s.strip() for s in str(text).split(",")]
    if not text or any(not s for s in items):
        raise InputError(f"--{key} must be a comma-separated list without empty items, "
                         f"got {text!r}")
    return items


def layer_list(text: str | None) -> tuple[str, ...] | None:
    """``--layers layer2,layer3`` -> ``("layer2", "layer3")`` (duplicates refused)."""
    if text is None:
        return None
    names = _items("layers", text)
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"--layers names {dup[0]!r} twice")
    return tuple(names)


def pairs(key: str, text: str | None) -> list[tuple[str, str]] | None:
    """``A:B,C:D`` -> ``[("A", "B"), ("C", "D")]`` (each left side once)."""
    if text is None:
        return None
    out = []
    for item in _items(key, text):
        left, sep, right = item.rpartition(":")
        if not sep or not left or not right:
            raise InputError(f"--{key} items are NAME:VALUE, got {item!r}")
        out.append((left, right))
    lefts = [a for a, _ in out]
    dup = sorted({a for a in lefts if lefts.count(a) > 1})
    if dup:
        raise InputError(f"--{key} names {dup[0]!r} twice")
    return out


def match(text: str | None) -> dict[str, str] | None:
    """``--match layer2:layer2,tokens:layer4``: teacher layer -> student stage."""
    p = pairs("match", text)
    return None if p is None else dict(p)


def layer_weights(text: str | None) -> dict[str, float] | float | None:
    """``--layer-weights 0.5`` (every layer) or ``layer3:1,layer4:0.5`` (per teacher layer);
    each a finite number >= 0 (0 leaves a layer out of the loss)."""
    if text is None:
        return None
    text = str(text)
    if ":" not in text:
        return _weight(text)
    return {k: _weight(v) for k, v in pairs("layer-weights", text)}


def _weight(v: str) -> float:
    try:
        w = float(v)
    except ValueError:
        raise InputError(f"--layer-weights: {v!r} is not a number") from None
    if not math.isfinite(w) or w < 0:
        raise InputError(f"--layer-weights must be finite numbers >= 0, got {v}")
    return w


def check(opts: dict) -> None:
    """The multi-layer options among ``opts`` (a config's fields or the CLI's arguments)."""
    if opts.get("grid") is not None:
        grid(opts["grid"])
    layers = opts.get("layers")
    if isinstance(layers, str):
        layer_list(layers)
    match(opts.get("match"))
    layer_weights(opts.get("layer_weights"))
