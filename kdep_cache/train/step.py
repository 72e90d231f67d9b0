"""What the training loop consumes: a :class:`TrainBatch` per step."""

from __future__ import annotations

from typing import NamedTuple

import torch


class TrainBatch(NamedTuple):
    """One step's input. ``weight``: this rank's share of the global batch x world size
    (1.0 in one process). ``params``: the views' augmentation parameters while ``x`` still
    needs the device part (uint8 views, or ``Jpeg`` s for --decode gpu); None once finished."""

    x: torch.Tensor | list
    target: torch.Tensor
    weight: float = 1.0
    params: torch.Tensor | None = None
