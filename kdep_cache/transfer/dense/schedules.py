"""The dense tasks' learning-rate schedules as :class:`~kdep_cache.train.loop.Schedule`
subclasses (the one training loop only calls ``lr_at`` and reads ``epochs``):

- ``poly``: ``lr * (1 - t / epochs) ** 0.9`` per iteration (PSPNet / DeepLab, segmentation);
- ``multistep``: x0.1 at 2/3 and 8/9 of training (detectron2's 1x COCO schedule: steps at
  iterations 60k and 80k of 90k).

Every dense schedule (these, and ``step`` / ``cosine`` / ``constant`` when asked for) starts
with a linear warm-up, as torchvision's detection references and detectron2 do
(``WarmupMultiStepLR`` / ``WarmupPolyLR``): the lr is multiplied by
``f + (1 - f) * t / w`` for ``t < w`` (``f = 1/1000``), over ``w`` = the first
:data:`WARMUP_ITERS` iterations, at most :data:`WARMUP_FRACTION` of training. Without it, a
random-init ResNet-18 Faster R-CNN on a small VOC-layout set reached a non-finite loss in
its second epoch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ...errors import InputError
from ...names import TRANSFER_SCHEDULES
from ...train.loop import Schedule

POLY_POWER = 0.9
MILESTONES = (2 / 3, 8 / 9)
KINDS = TRANSFER_SCHEDULES
WARMUP_FACTOR = 0.001   # torchvision references and detectron2: start at lr / 1000
WARMUP_ITERS = 1000     # detectron2's WARMUP_ITERS (torchvision: min(1000, one epoch))
WARMUP_FRACTION = 0.25  # of all iterations, so that a short run is not all warm-up


def warmup_factor(t: float, warmup_epochs: float) -> float:
    """The lr multiplier at fractional epoch ``t`` (1 after the warm-up)."""
    if warmup_epochs <= 0 or t >= warmup_epochs:
        return 1.0
    a = t / warmup_epochs
    return WARMUP_FACTOR * (1 - a) + a


def warmup_epochs(epochs: int, steps_per_epoch: int) -> float:
    """The warm-up length in (fractional) epochs: whole iterations, see the module doc."""
    total = epochs * max(1, steps_per_epoch)
    iters = min(WARMUP_ITERS, max(1, math.floor(WARMUP_FRACTION * total)))
    return iters / max(1, steps_per_epoch)


@dataclass
class Poly(Schedule):
    kind: str = "poly"
    power: float = POLY_POWER

    def lr_at(self, t: float) -> float:
        base = self.lr * max(0.0, 1 - t / self.epochs) ** self.power
        return base * warmup_factor(t, self.warmup_epochs)


@dataclass
class MultiStep(Schedule):
    kind: str = "multistep"
    milestones: tuple = MILESTONES

    def lr_at(self, t: float) -> float:
        base = self.lr * 0.1 ** sum(t >= m * self.epochs - 1e-9 for m in self.milestones)
        return base * warmup_factor(t, self.warmup_epochs)


@dataclass
class Warmed(Schedule):
    """``step`` / ``cosine`` / ``constant`` (the loop's own) with the dense warm-up."""

    def lr_at(self, t: float) -> float:
        plain = Schedule(self.epochs, self.lr, self.kind, self.lr_step)
        return plain.lr_at(t) * warmup_factor(t, self.warmup_epochs)


def make_schedule(kind: str, epochs: int, lr: float, lr_step: float | None = None,
                  warmup_epochs: float = 0.0) -> Schedule:
    if kind == "poly":
        return Poly(epochs, lr, warmup_epochs=warmup_epochs)
    if kind == "multistep":
        return MultiStep(epochs, lr, warmup_epochs=warmup_epochs)
    if kind not in KINDS:
        raise InputError(f"--schedule must be one of {', '.join(KINDS)}, got {kind!r}")
    return Warmed(epochs, lr, kind, lr_step, warmup_epochs)
