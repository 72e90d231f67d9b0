"""Checks of what a command finds around it, torch-free: the output folder (before anything is
written), integer and number environment variables (``KDEP_THREADS``, ``WORLD_SIZE`` ...),
and the kind and size of an input file before it is opened. Each raises a one-line
:class:`~kdep_cache.errors.InputError` (or returns a reason to record).
"""

from __future__ import annotations

import math
import os
from pathlib import Path

from ..errors import InputError


def flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def output(key: str, path) -> None:
    """``path`` (if given) can be an output folder: not a file, no file among its parents, the
    nearest existing parent writable. Checked before anything is written; what only the
    write itself reveals (``/proc``, disk full) becomes one line in the CLI's error path."""
    if path is None:
        return
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise InputError(f"{flag(key)} {path} is a file, not a folder")
    for parent in p.absolute().parents:  # the nearest one that exists
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag(key)} {path}: {parent} is a file, not a folder")
            if not p.exists() and not os.access(parent, os.W_OK | os.X_OK):
                raise InputError(f"{flag(key)} {path}: {parent} is not writable (permissions "
                                 "or a read-only filesystem)")
            return


def env_int(name: str, default: int | None = None, lo: int = 0) -> int | None:
    """An integer environment variable (``KDEP_THREADS``, ``WORLD_SIZE`` ...): ``default`` if
    unset or empty, else an integer ``>= lo`` or a one-line :class:`InputError`."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        v = int(text)
    except ValueError:
        raise InputError(f"environment variable {name} must be an integer, got {text!r}") from None
    if v < lo:
        raise InputError(f"environment variable {name} must be >= {lo}, got {v}")
    return v


def env_float(name: str, default: float) -> float:
    """A positive finite number from the environment (``KDEP_DIST_TIMEOUT``), else ``default``."""
    text = os.environ.get(name, "")
    if not text.strip():
        return default
    try:
        v = float(text)
    except ValueError:
        v = math.nan
    if not (math.isfinite(v) and v > 0):
        raise InputError(f"environment variable {name} must be a positive number, got {text!r}")
    return v
