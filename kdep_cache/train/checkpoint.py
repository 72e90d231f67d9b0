"""``checkpoint.pt``: what it holds, what a resume must match, who reads it.

A checkpoint carries the model, objective, optimizer and scaler states, the epoch, the run's
settings, the history and every rank's random-number streams (torch CPU, the rank's CUDA
device, numpy's and Python's global ones), so that a resumed run draws the same dropout
masks as an uninterrupted one. Under torchrun rank 0 alone reads it and broadcasts what it
found (:func:`shared_start`): with a node-local ``--out`` the other ranks have no file, and
each rank reading its own would start them at another epoch.
"""

from __future__ import annotations

import io
import json
import logging
import random
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..cache.manifest import diff_settings
from ..cache.schema import CHECKPOINT, METRICS
from ..errors import ArtifactError, InputError, KdepError
from ..runtime.dist import Dist
from ..storage.digest import state_sha
from ..storage.fsio import atomic_write

log = logging.getLogger(__name__)

# settings recorded since they are checked; a run written before has them at these values
# as far as anyone can tell, so it is accepted whatever they are now
RECORDED_LATER = ("world_size", "sync_bn")


def settings_diffs(old: dict, new: dict) -> list[str]:
    """What differs between a run's recorded settings and today's (one line each); a key of
    :data:`RECORDED_LATER` that the old run lacks is not a difference."""
    old = {**{k: new[k] for k in RECORDED_LATER if k in new and k not in old}, **old}
    return diff_settings(old, new)


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Atomic ``checkpoint.pt`` carrying a digest of its own content (checked on resume)."""
    buf = io.BytesIO()
    torch.save({**state, "digest": state_sha(state)}, buf)
    data = buf.getbuffer()
    atomic_write(run_dir / CHECKPOINT, lambda p: p.write_bytes(data), len(data))


def load_checkpoint(run_dir: Path, settings: dict) -> dict | None:
    path = run_dir / CHECKPOINT
    if not path.is_file():
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unreadable checkpoint is reported the same way
        raise ArtifactError(f"{path} is unreadable ({type(e).__name__}); delete it to restart"
                            ) from None
    digest = state.pop("digest", None)
    if digest is None:
        log.warning("%s has no digest (written before kdep-cache checked them): not verified",
                    path)
    elif state_sha(state) != digest:
        raise ArtifactError(f"{path} does not match its own digest (damaged): delete it to "
                            "restart the run from scratch")
    diffs = settings_diffs(json.loads(state["settings"]), settings)
    if diffs:
        raise InputError(f"--resume: {run_dir} was trained with other settings: "
                         + "; ".join(diffs[:5]))
    return state


def rewrite_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl = exactly the checkpointed history (drops lines of a killed epoch)."""
    data = "".join(json.dumps(r) + "\n" for r in history).encode()
    atomic_write(run_dir / METRICS, lambda p: p.write_bytes(data))


def resume_state(run_dir: Path, settings: dict, resume: bool) -> dict | None:
    """The checkpoint to resume (refused without --resume); metrics.jsonl made to match it
    (a fresh run drops an old one). Rank 0's job under torchrun (:func:`shared_start`)."""
    start = load_checkpoint(run_dir, settings)
    if start is not None and not resume:
        raise InputError(f"{run_dir} holds an interrupted run (epoch {start['epoch']}): add "
                         "--resume to continue it, or use a new --out")
    if start is not None:
        rewrite_metrics(run_dir, json.loads(start["history"]))
    elif (run_dir / METRICS).exists():
        (run_dir / METRICS).unlink()
    return start


def shared_start(d: Dist, read: Callable[[], dict | None], what: str) -> dict | None:
    """``read()`` on rank 0 only (the checkpoint, its checks and refusals); every rank gets
    its result, or raises rank 0's refusal as one line. One process: just ``read()``."""
    if not d.enabled:
        return read()
    box = {"ok": False, "error": "it stopped", "start": None}
    if d.main:
        try:
            box = {"ok": True, "start": read()}
        except KdepError as e:
            box = {"ok": False, "error": str(e), "type": type(e).__name__}
            raise
        finally:  # the other ranks learn the outcome, whatever it is
            box = d.broadcast_object(box, f"{what}: sharing rank 0's checkpoint")
        return box["start"]
    box = d.broadcast_object(None, f"{what}: waiting for rank 0's checkpoint")
    if not box["ok"]:
        kind = InputError if box.get("type") == "InputError" else ArtifactError
        raise kind(f"rank 0 could not start the run: {box['error']}")
    return box["start"]


def rng_state(device: torch.device) -> dict:
    """This process's random-number streams, as plain data (``weights_only`` loads it)."""
    key, pos, has_gauss, gauss = np.random.get_state()[1:]
    version, py, py_gauss = random.getstate()
    out = {"torch": torch.get_rng_state(),
           "numpy": {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos),
                     "has_gauss": int(has_gauss), "gauss": float(gauss)},
           "python": {"version": version, "state": list(py), "gauss": py_gauss}}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def restore_rng(state: dict, device: torch.device) -> None:
    """The streams :func:`rng_state` recorded, back in place."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(("MT19937", n["key"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["gauss"]))
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)
