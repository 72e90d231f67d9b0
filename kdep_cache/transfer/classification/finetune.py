"""Full fine-tuning (the paper's protocol) through the shared training loop: a new linear head,
the final ReLU restored (the head reads ``post``), SGD, test top-1 after every epoch, and
resume at an epoch boundary from the per-seed checkpoint (tested to resume and finish)."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from ...errors import InputError
from ...models import FeatureNet
from ...names import METRICS
from ...runtime.device import autocast, prepare_model
from ...runtime.dist import Dist, rank_seed
from ...train.checkpoint import shared_start
from ...train.loop import RunContext, Schedule, load_checkpoint, rewrite_metrics, sgd, train
from ...train.objectives import Supervised
from .data import Batches, Downstream, test_transform, train_transform
from .metrics import scores

log = logging.getLogger(__name__)


@torch.no_grad()
def evaluate(net: FeatureNet, batches, device: torch.device, precision: str,
             classes: list[str]) -> dict:
    """``test_top1``, ``test_balanced``, ``test_per_class`` (percent) of ``net``'s logits, and
    ``test_classes_predicted`` (how many classes its predictions use)."""
    was_training = net.training
    net.eval()
    preds, targets = [], []
    for x, y in batches:
        x = x.to(device).contiguous(memory_format=torch.channels_last)
        with autocast(device, precision):
            logits = net(x, want_logits=True)["logits"]
        preds.append(logits.float().argmax(1).cpu())
        targets.append(y)
    net.train(was_training)
    if not preds:
        return {"test_top1": float("nan")}
    pred = torch.cat(preds).numpy()
    return {**scores(pred, torch.cat(targets).numpy(), classes),
            "test_classes_predicted": len(set(pred.tolist()))}


def summarize(history: list[dict]) -> dict:
    """Final-epoch and best-epoch test top-1 from the per-epoch records."""
    accs = [(r["epoch"], r["test_top1"]) for r in history if "test_top1" in r]
    if not accs:
        raise InputError("fine-tuning produced no evaluated epoch")
    best_epoch, best = max(accs, key=lambda e: (e[1], -e[0]))  # earliest epoch among ties
    last = [r for r in history if "test_top1" in r][-1]
    return {"final_top1": accs[-1][1], "best_top1": best, "best_epoch": best_epoch,
            "final_balanced": last.get("test_balanced"),
            "final_per_class": last.get("test_per_class"),
            "epochs": accs[-1][0], "final_train_loss": history[-1].get("loss")}


def one_class_warning(summary: dict, history: list[dict], seed: int) -> str | None:
    """One line when the final epoch put every test image in one class
    (``test_classes_predicted`` 1): the row is then the share of that class, which
    reads like a result (issue 24: a random-init MobileNetV2, 3 epochs at lr 0.01, gave
    10.00 ± 0.00 on 10 classes while its train-mode accuracy was rising)."""
    last = [r for r in history if "test_top1" in r][-1:] or [{}]
    per_class = summary.get("final_per_class") or {}
    full = [k for k, v in per_class.items() if v == 100.0]
    if last[0].get("test_classes_predicted") != 1 or len(per_class) < 2 or len(full) != 1:
        return None
    acc = history[-1].get("acc") if history else None
    train = f"; its train-mode accuracy in the last epoch was {100 * acc:.1f} %" if isinstance(
        acc, (int, float)) else ""
    return (f"fine-tune seed {seed}: the network predicts '{full[0]}' for every test image, so "
            f"its test top-1 ({summary['final_top1']:.2f}) is that class's share{train}; it has not learned "
            "a usable classifier at these --epochs / --lr: more epochs (or another --lr) before "
            "reading this row")


def start_state(run_dir: Path, settings: dict, resume: bool, what: str = "fine-tune",
                main: bool = True) -> dict | None:
    """The checkpoint to resume from (refused without ``--resume``); a fresh run drops an old
    metrics.jsonl, a resumed one keeps exactly the checkpointed epochs."""
    run_dir.mkdir(parents=True, exist_ok=True)
    start = load_checkpoint(run_dir, settings)
    if start is not None and not resume:
        raise InputError(f"{run_dir} holds an interrupted {what} (epoch {start['epoch']}): "
                         "add --resume to continue it, or use a new --out")
    if not main:  # under torchrun rank 0 alone writes
        return start
    if start is not None:
        rewrite_metrics(run_dir, json.loads(start["history"]))
        log.info("resuming %s at epoch %d", run_dir, int(start["epoch"]))
    elif (run_dir / METRICS).exists():
        (run_dir / METRICS).unlink()
    return start


def finetune(net: FeatureNet, data: Downstream, run_dir: Path, settings: dict, seed: int,
             device: torch.device, precision: str, resume: bool, p: dict,
             dist: Dist | None = None) -> dict:
    """Fine-tune ``net`` on ``data`` with the protocol ``p``; checkpoints in ``run_dir``.
    Under torchrun: DistributedDataParallel on slices of each global batch of
    ``p["batch_size"]``; every rank evaluates the (small) test split, rank 0 writes."""
    dist = dist or Dist()
    start = shared_start(dist, lambda: start_state(run_dir, settings, resume), "fine-tune")
    size, mean, std = p["image_size"], p["mean"], p["std"]
    pin = device.type == "cuda"
    test = Batches(data.test, test_transform(size, mean, std), size, p["batch_size"],
                   p["workers"], pin=pin)
    tt = train_transform(size, mean, std)

    def batches(epoch: int) -> Batches:
        torch.manual_seed(rank_seed(seed * 1_000_003 + epoch, dist.rank))  # crops, dropout
        return Batches(data.train, tt, size, p["batch_size"], p["workers"], shuffle=True,
                       seed=seed * 1_000_003 + epoch, pin=pin, rank=dist.rank,
                       world=dist.world_size)

    net = prepare_model(net, device)
    objective = Supervised(1.0).to(device)
    opt = sgd(net.parameters(), p["lr"], p["momentum"], p["weight_decay"])
    schedule = Schedule(p["epochs"], p["lr"], p["schedule"], p["lr_step"])
    run = RunContext(run_dir, settings, device, precision, f"finetune seed {seed}", dist)
    history = train(net, objective, batches, opt, schedule, run, start,
                    on_epoch_end=lambda e: evaluate(net, test, device, precision, data.classes))
    summary = summarize(history)
    warning = one_class_warning(summary, history, seed)
    if warning and dist.main:
        log.warning("%s", warning)
    return {"seed": seed, **summary, "history": [
        {k: r.get(k) for k in ("epoch", "loss", "acc", "lr", "test_top1", "test_balanced",
                               "seconds")}
        for r in history]}
