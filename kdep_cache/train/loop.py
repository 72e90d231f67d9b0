"""The one training loop (distillation, baselines and fine-tuning differ only by objective,
data and callbacks): per-iteration lr, finite-loss check, atomic per-epoch checkpoints,
exact resume, ``metrics.jsonl``."""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from tqdm import tqdm

from ..cache.manifest import diff_settings
from ..cache.schema import CHECKPOINT, METRICS
from ..digest import state_sha
from ..errors import ArtifactError, InputError, TrainingError
from ..fsio import atomic_write
from ..runtime import autocast

log = logging.getLogger(__name__)


@dataclass
class Schedule:
    epochs: int
    lr: float
    kind: str = "step"            # step: x0.1 every lr_step epochs (default: each third)
    lr_step: float | None = None
    warmup_epochs: float = 0.0    # the paper uses none

    def lr_at(self, t: float) -> float:
        """Learning rate at fractional epoch ``t``."""
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            return self.lr * (t + 1e-9) / self.warmup_epochs
        if self.kind == "cosine":
            return 0.5 * self.lr * (1 + math.cos(math.pi * min(t / self.epochs, 1.0)))
        if self.kind == "constant":
            return self.lr
        step = self.lr_step or max(self.epochs / 3, 1e-9)
        return self.lr * 0.1 ** int(math.floor(t / step + 1e-9))


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
    diffs = diff_settings(json.loads(state["settings"]), settings)
    if diffs:
        raise InputError(f"--resume: {run_dir} was trained with other settings: "
                         + "; ".join(diffs[:5]))
    return state


def train(model, objective, batches: Callable[[int], Iterable], optimizer, schedule: Schedule,
          run_dir: Path, settings: dict, device, precision: str, start: dict | None = None,
          on_epoch_end: Callable[[int], dict] | None = None, desc: str = "train") -> list[dict]:
    """Train ``model`` for ``schedule.epochs``; ``batches(epoch)`` yields ``(x, target)``."""
    epoch0 = 0
    history: list[dict] = []
    # fp16 gradients underflow without loss scaling; a no-op for fp32 / bf16
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if start is not None:
        model.load_state_dict(start["model"])
        objective.load_state_dict(start["objective"])
        optimizer.load_state_dict(start["optimizer"])
        if start.get("scaler"):
            scaler.load_state_dict(start["scaler"])
        epoch0 = int(start["epoch"])
        history = json.loads(start["history"])
    metrics_path = run_dir / METRICS
    for epoch in range(epoch0, schedule.epochs):
        model.train()
        objective.train()
        t0, seen, sums, steps = time.perf_counter(), 0, {}, 0
        it = batches(epoch)
        bar = tqdm(it, total=getattr(it, "__len__", lambda: None)(), desc=f"{desc} {epoch + 1}"
                   f"/{schedule.epochs}", unit="batch", disable=None, leave=False)
        n_steps = max(len(it), 1) if hasattr(it, "__len__") else 1
        for step, (x, target) in enumerate(bar):
            lr = schedule.lr_at(epoch + step / n_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr
            x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
            if objective.needs == "teacher":
                target = objective.target(x)
            else:
                target = target.to(device, non_blocking=True)
            with autocast(device, precision):
                out = model(x, want_logits=objective.want_logits, want_post=objective.want_post)
            parts = objective(out, target)
            loss = parts["loss"]
            if not torch.isfinite(loss):
                kept = (f"the last good checkpoint (epoch {epoch}) is kept in {run_dir / CHECKPOINT}"
                        if epoch else "no checkpoint was written (it failed in the first epoch)")
                raise TrainingError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}; "
                                    f"{kept}: lower --lr or --loss-weight")
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            seen += x.shape[0]
            steps += 1
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + float(v.detach())
            if steps % 10 == 0:
                bar.set_postfix(loss=f"{sums['loss'] / steps:.4f}", lr=f"{lr:.3g}")
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()},
               "lr": schedule.lr_at(epoch), "images": seen, "seconds": round(secs, 3),
               "images_per_s": round(seen / secs, 2) if secs > 0 else None}
        if on_epoch_end is not None:
            rec.update(on_epoch_end(epoch))
        history.append(rec)
        save_checkpoint(run_dir, {"model": model.state_dict(), "objective":
                                  objective.state_dict(), "optimizer": optimizer.state_dict(),
                                  "epoch": epoch + 1, "settings": json.dumps(settings),
                                  "history": json.dumps(history),
                                  "scaler": scaler.state_dict() if scaler.is_enabled() else {}})
        with open(metrics_path, "a") as f:
            f.write(json.dumps(rec) + "\n")
    return history


def rewrite_metrics(run_dir: Path, history: list[dict]) -> None:
    """metrics.jsonl = exactly the checkpointed history (drops lines of a killed epoch)."""
    data = "".join(json.dumps(r) + "\n" for r in history).encode()
    atomic_write(run_dir / METRICS, lambda p: p.write_bytes(data))


def sgd(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

