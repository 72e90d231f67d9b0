"""The dense tasks' learning-rate schedules as :class:`~kdep_cache.train.loop.Schedule`
subclasses (the one training loop only calls ``lr_at`` and reads ``epochs``):

- ``poly``: ``lr * (1 - t / epochs) ** 0.9`` per iteration (PSPNet / DeepLab, segmentation);
- ``multistep``: x0.1 at 2/3 and 8/9 of training (detectron2's 1x COCO schedule: steps at
  iterations 60k and 80k of 90k) after a linear warm-up.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import InputError
from ..names import TRANSFER_SCHEDULES
from ..train.loop import Schedule

POLY_POWER = 0.9
MILESTONES = (2 / 3, 8 / 9)
KINDS = TRANSFER_SCHEDULES


@dataclass
class Poly(Schedule):
    kind: str = "poly"
    power: float = POLY_POWER

    def lr_at(self, t: float) -> float:
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            return super().lr_at(t)
        return self.lr * max(0.0, 1 - t / self.epochs) ** self.power


@dataclass
class MultiStep(Schedule):
    kind: str = "multistep"
    milestones: tuple = MILESTONES

    def lr_at(self, t: float) -> float:
        if self.warmup_epochs > 0 and t < self.warmup_epochs:
            return super().lr_at(t)
        return self.lr * 0.1 ** sum(t >= m * self.epochs - 1e-9 for m in self.milestones)


def make_schedule(kind: str, epochs: int, lr: float, lr_step: float | None = None,
                  warmup_epochs: float = 0.0) -> Schedule:
    if kind == "poly":
        return Poly(epochs, lr, warmup_epochs=warmup_epochs)
    if kind == "multistep":
        return MultiStep(epochs, lr, warmup_epochs=warmup_epochs)
    if kind not in KINDS:
        raise InputError(f"--schedule must be one of {', '.join(KINDS)}, got {kind!r}")
    return Schedule(epochs, lr, kind, lr_step, warmup_epochs)
