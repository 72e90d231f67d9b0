"""Format names, versions and the provenance written into every artifact."""

from __future__ import annotations

import datetime as _dt
import platform
import subprocess
from pathlib import Path

# artifact file names are defined once, torch-free, in kdep_cache.names
from ..names import (  # noqa: F401  (re-exported)
    CHECKPOINT,
    CONFIG,
    IMAGES,
    MANIFEST,
    METRICS,
    PROJECTION_FILE,
    RESULTS,
    SIDECAR,
    STUDENT_FILE,
    STUDENT_SAFETENSORS,
)

RAW = "kdep-cache/raw-features"       # extract output
TARGETS = "kdep-cache/targets"        # fit-svd output
PROJECTION = "kdep-cache/projection"  # fit-svd projection artifact
STUDENT = "kdep-cache/student"        # train-student output sidecar
TRANSFER = "kdep-cache/transfer"      # transfer results.json
FORMAT_VERSION = 1
# extract --pack: each shard's images as one uint8 array + (n + 1) offsets into it (the bytes
# of image start + j are pack[offsets[j]:offsets[j + 1]]; empty for a skipped image)
PACK, PACK_OFFSETS = "pack", "pack_offsets"
ARRAY_ATTR = "kdep"  # JSON string attribute on every shard (never pickles)


def shard_name(index: int) -> str:
    return f"shard-{index:05d}.h5"


def now_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


def _git_hash() -> str | None:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).resolve().parent)
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def producer_info() -> dict:
    import h5py
    import numpy
    import torch
    import torchvision

    from .. import __version__
    return {"package": "kdep-cache", "version": __version__, "git": _git_hash(),
            "python": platform.python_version(), "torch": torch.__version__,
            "torchvision": torchvision.__version__, "numpy": numpy.__version__,
            "h5py": h5py.__version__}
