"""The one training loop (distillation, baselines and fine-tuning differ only by objective,
data, callbacks and, for detection, the step: :mod:`kdep_cache.train.step`): per-iteration lr,
finite-loss check, atomic per-epoch checkpoints, resume at an epoch boundary (bitwise equal to
an uninterrupted run for train-student, tested; the fine-tunes are tested to resume and
finish), ``metrics.jsonl``."""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import torch
from torch import nn

from ..cache.schema import CHECKPOINT, METRICS
from ..errors import InputError, TrainingError
from ..runtime.cpu_share import after_epoch
from ..runtime.dist import Dist
from ..runtime.progress import Progress, duration
from ..storage.fsio import append_line
from .checkpoint import (
    load_checkpoint,
    restore_rng,
    rewrite_metrics,
    rng_state,
    save_checkpoint,
)
from .readback import Readback, Tally, readback_steps
from .step import Step, StepModule, TrainBatch, objective_step

__all__ = ["RunContext", "Schedule", "TrainBatch", "load_checkpoint", "mean_rate",
           "rewrite_metrics", "save_checkpoint", "sgd", "train"]

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


@dataclass(frozen=True)
class RunContext:
    """What a run's loop needs besides the model, its data and its optimization: where it
    writes (``out``: checkpoint + metrics.jsonl; ``settings``: what a resume must match), where
    it computes, its progress label, torch.distributed, and ``compile``: the step runs
    ``torch.compile(model)`` (same parameters; the plain ``model`` is what is checkpointed)."""

    out: Path
    settings: dict
    device: torch.device
    precision: str
    desc: str = "train"
    dist: Dist | None = None
    compile: bool = False


def _wrap(step: StepModule, dist: Dist, device) -> nn.Module:
    if not dist.enabled:
        return step
    from torch.nn.parallel import DistributedDataParallel as DDP
    # feature objectives leave the classifier head unused (DDP must be told)
    o = step.objective
    return DDP(step, device_ids=[device.index] if device.type == "cuda" else None,
               find_unused_parameters=o is None or not o.want_logits)


def train(model, objective, batches: Callable[[int], Iterable], optimizer, schedule: Schedule,
          run: RunContext, start: dict | None = None,
          on_epoch_end: Callable[[int], dict] | None = None, step: Step | None = None
          ) -> list[dict]:
    """Train ``model`` for ``schedule.epochs``; ``batches(epoch)`` yields :class:`TrainBatch`
    es (or plain ``(x, target[, weight])`` tuples). ``step(model, batch) -> loss parts``: the
    task's step (default :func:`objective_step`); ``objective`` (None: a step that needs none)
    is trained and checkpointed with the model. Under torch.distributed only rank 0 writes the
    checkpoint and metrics and shows progress. ``start``: a checkpoint's state (the same on
    every rank)."""
    run_dir, settings, device, precision = run.out, run.settings, run.device, run.precision
    dist = run.dist or Dist()
    epoch0 = 0
    history: list[dict] = []
    # fp16 gradients underflow without loss scaling; a no-op for fp32 / bf16
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16")
    if start is not None:
        model.load_state_dict(start["model"])
        if objective is not None:
            objective.load_state_dict(start["objective"])
        optimizer.load_state_dict(start["optimizer"])
        if start.get("scaler"):
            scaler.load_state_dict(start["scaler"])
        epoch0 = int(start["epoch"])
        history = json.loads(start["history"])
        rngs = start.get("rng")  # absent in checkpoints written before they carried it
        if rngs and len(rngs) == dist.world_size:
            restore_rng(rngs[dist.rank], device)  # the same dropout masks as an unbroken run
    step_fn = _wrap(StepModule(torch.compile(model) if run.compile else model, objective,
                               step or objective_step(objective, device, precision)),
                    dist, device)
    first = batches(epoch0)
    per_epoch = max(len(first), 1) if hasattr(first, "__len__") else 1
    if hasattr(first, "__len__") and len(first) == 0 and epoch0 < schedule.epochs:
        raise InputError(_no_step(epoch0, dist))
    prog = Progress(schedule.epochs * per_epoch, "batch", run.desc, enabled=dist.main,
                    initial=epoch0 * per_epoch)
    for epoch in range(epoch0, schedule.epochs):
        model.train()
        if objective is not None:
            objective.train()
        t0 = time.perf_counter()
        it = first if epoch == epoch0 else batches(epoch)
        n_steps = max(len(it), 1) if hasattr(it, "__len__") else 1
        window, tally = Readback(readback_steps(device)), Tally()

        def account(rows, epoch=epoch, tally=tally, n=n_steps):  # host numbers, in step order
            bad = tally.take(rows)
            if bad is not None:
                raise TrainingError(_non_finite(epoch, bad, run_dir))
            if rows:
                lr_now = schedule.lr_at(epoch + rows[-1][0] / n)
                prog.update(len(rows), epoch=f"{epoch + 1}/{schedule.epochs}",
                            loss=f"{tally.mean('loss'):.4f}", lr=f"{lr_now:.3g}")

        for i, batch in enumerate(it):
            batch = batch if isinstance(batch, TrainBatch) else TrainBatch(*batch)
            weight = float(batch.weight)
            lr = schedule.lr_at(epoch + i / n_steps)
            for g in optimizer.param_groups:
                g["lr"] = lr * g.get("lr_scale", 1.0)  # e.g. a new head at 10x
            x = batch.x.to(device, non_blocking=True).contiguous(
                memory_format=torch.channels_last)
            if objective is not None and objective.needs == "teacher":
                target = objective.target(x)
            else:
                target = batch.target.to(device, non_blocking=True)
            with dist.implicit("train: DDP forward"):
                parts = step_fn(TrainBatch(x, target, weight))
            names = tally.names = sorted(parts)
            # global-batch means of the loss parts (and the image count), on every rank
            red = dist.all_reduce(torch.stack([parts[k].detach().float() * weight / dist.world_size
                                               for k in names] + [torch.tensor(
                                                   float(x.shape[0]), device=x.device)]),
                                  "train: loss all-reduce")
            if window.every == 1:  # CPU: checked before the step, as always
                account(window.add(red))
            optimizer.zero_grad(set_to_none=True)
            with dist.implicit("train: DDP gradient all-reduce"):
                scaler.scale(parts["loss"] * weight).backward()
            scaler.step(optimizer)
            scaler.update()
            if window.every > 1:  # CUDA: one host read per window, after the steps
                account(window.add(red))
        account(window.flush())
        seen, steps, sums = tally.seen, tally.steps, tally.sums
        if steps == 0:  # before any checkpoint of an untrained epoch is written
            raise InputError(_no_step(epoch, dist))
        secs = time.perf_counter() - t0
        rec = {"epoch": epoch + 1, **{k: v / max(steps, 1) for k, v in sums.items()},
               "lr": schedule.lr_at(epoch), "images": seen, "seconds": round(secs, 3),
               "images_per_s": round(seen / secs, 2) if secs > 0 else None}
        if on_epoch_end is not None:
            rec.update(on_epoch_end(epoch))
        history.append(rec)
        rngs = dist.all_gather_object(rng_state(device), "train: gathering the random streams")
        if dist.main:
            after_epoch(history)  # its threads (kept on resume); a hint when it ran slow
            save_checkpoint(run_dir, {"model": model.state_dict(), "objective":
                                      {} if objective is None else objective.state_dict(),
                                      "optimizer": optimizer.state_dict(),
                                      "epoch": epoch + 1, "settings": json.dumps(settings),
                                      "history": json.dumps(history), "rng": rngs,
                                      "scaler": scaler.state_dict() if scaler.is_enabled() else {}})
            append_line(run_dir / METRICS, json.dumps(rec))  # disk full: one line (#23.9)
        prog.line(f"epoch {epoch + 1}/{schedule.epochs}: loss {rec['loss']:.4f}, "
                  f"{rec['images_per_s']} img/s, {duration(secs)}")
    prog.close()
    return history


def _non_finite(epoch: int, step: int, run_dir: Path) -> str:
    kept = (f"the last good checkpoint (epoch {epoch}) is kept in {run_dir / CHECKPOINT}"
            if epoch else "no checkpoint was written (it failed in the first epoch)")
    return (f"non-finite loss at epoch {epoch + 1}, step {step + 1}; {kept}: lower --lr or "
            "--loss-weight")


def _no_step(epoch: int, dist: Dist) -> str:
    return (f"epoch {epoch + 1} has no training step: no global batch leaves each of the "
            f"{dist.world_size} rank(s) at least 2 images (BatchNorm cannot train on one); "
            "use a larger --batch-size, fewer ranks or more images")


def mean_rate(history: list[dict]) -> float | None:
    """Images per second over all the run's epochs (``images_per_s`` is the last one's)."""
    secs = sum(r.get("seconds") or 0 for r in history)
    return round(sum(r.get("images", 0) for r in history) / secs, 2) if secs > 0 else None


def sgd(params, lr, momentum, weight_decay):
    return torch.optim.SGD(params, lr=lr, momentum=momentum, weight_decay=weight_decay)

