"""Which stage's artifacts a folder holds, torch-free: each stage writes its own --out.

A raw cache (extract), targets (fit-svd), a student run (train-student), a transfer result
(transfer) and a diagnostics report (diagnose) are recognised by the files only they write
(or by the ``format`` of their config / manifest). A command whose --out holds another
stage's artifacts is refused before anything is written: the two kinds would otherwise mix,
and ``info`` / ``verify`` would then show only one of them.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from ..errors import InputError
from ..names import (
    CHECKPOINT,
    CONFIG,
    DIAGNOSE_REPORT,
    IMAGES,
    MANIFEST,
    PROJECTION_FILE,
    RESULTS,
    SIDECAR,
    STUDENT_FILE,
    STUDENT_SAFETENSORS,
)

FORMATS = {"kdep-cache/raw-features": "extract", "kdep-cache/targets": "fit-svd"}
# stage -> files at the top of its --out that only it writes
MARKERS = {
    "extract": (IMAGES,),
    "fit-svd": (PROJECTION_FILE,),
    "train-student": (SIDECAR, STUDENT_FILE, STUDENT_SAFETENSORS, CHECKPOINT),
    "transfer": (RESULTS,),
    "diagnose": (DIAGNOSE_REPORT,),
}
_SEED_DIR = re.compile(r"seed-\d+$")  # transfer's per-seed fine-tuning folders


def stages_in(path) -> dict[str, str]:
    """stage -> the file that shows it, for every stage whose artifacts ``path`` holds."""
    p = Path(path)
    if not p.is_dir():
        return {}
    found: dict[str, str] = {}
    for stage, names in MARKERS.items():
        for name in names:
            if (p / name).exists():
                found.setdefault(stage, name)
    for name in (CONFIG, MANIFEST):
        try:
            fmt = json.loads((p / name).read_text()).get("format")
        except (OSError, ValueError, AttributeError):
            continue
        if fmt in FORMATS:
            found.setdefault(FORMATS[fmt], f"{name} of format {fmt}")
    try:
        seeds = [c.name for c in p.iterdir() if _SEED_DIR.match(c.name) and c.is_dir()]
    except OSError:
        seeds = []
    if seeds:
        found.setdefault("transfer", f"{sorted(seeds)[0]}/")
    return found


def own_out(key: str, path, stage: str) -> None:
    """Refuse an --out that holds another stage's artifacts."""
    if path is None:
        return
    other = {s: f for s, f in stages_in(path).items() if s != stage}
    if other:
        s, f = next(iter(other.items()))
        raise InputError(f"--{key.replace('_', '-')} {path} holds a `kdep-cache {s}` output "
                         f"({f}); {stage} writes its own folder: use a new --out")
