"""What the training loop consumes: a :class:`TrainBatch` per step, and a task's step.

A step is ``step(model, batch) -> loss parts`` (a dict of scalar tensors, ``"loss"`` the one
that is back-propagated). Distillation, the baselines, classification and segmentation
fine-tuning all take the default, :func:`objective_step`: the model's outputs (under
autocast) scored by the run's :class:`~kdep_cache.train.objectives.Objective`. A task whose
model computes its own losses from the targets (Faster R-CNN, ``transfer.det.step``) passes
its own step instead.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import torch
from torch import nn

from ..runtime.device import autocast


class TrainBatch(NamedTuple):
    """One step's input. ``weight``: this rank's share of the global batch x world size
    (1.0 in one process). ``params``: the views' augmentation parameters while ``x`` still
    needs the device part (uint8 views, or ``Jpeg`` s for --decode gpu); None once finished."""

    x: torch.Tensor | list
    target: torch.Tensor
    weight: float = 1.0
    params: torch.Tensor | None = None


Step = Callable[[nn.Module, TrainBatch], dict]


def objective_step(objective: nn.Module, device, precision: str) -> Step:
    """The default step: ``objective(model(x) under autocast, target)``."""
    def step(model: nn.Module, batch: TrainBatch) -> dict:
        with autocast(device, precision):
            out = model(batch.x, want_logits=objective.want_logits,
                        want_post=objective.want_post)
        return objective(out, batch.target)
    return step


class StepModule(nn.Module):
    """Model + objective (+ the step) as one module, so DistributedDataParallel syncs the
    gradients of both (a 1x1-conv regressor learns too)."""

    def __init__(self, model: nn.Module, objective: nn.Module | None, step: Step):
        super().__init__()
        self.model, self.objective, self.step = model, objective, step

    def forward(self, batch: TrainBatch) -> dict:
        return self.step(self.model, batch)
