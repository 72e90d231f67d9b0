"""The loop's per-step numbers (global-batch loss parts, image count) read back to the host.

Reading a CUDA tensor on the host waits for every kernel queued before it, so one read per
step would stall the loader's side stream each batch. :class:`Readback` keeps the steps'
device tensors and reads them back together every ``every`` steps (and at the end of the
epoch): one wait per window. On the CPU a read costs nothing and ``every`` is 1, so the
numbers (summed on the host in step order, as before) and the failure point are unchanged.
"""

from __future__ import annotations

import torch

CUDA_EVERY = 25  # steps per host read on CUDA: the progress bar lags at most this much


def readback_steps(device: torch.device) -> int:
    return CUDA_EVERY if device.type == "cuda" else 1


class Readback:
    """``add(t)`` one step's tensor; it returns the window's rows (host tensors, in step order,
    each with its 0-based step) when ``every`` steps are pending, else ``[]``; ``flush()``
    returns what is left."""

    def __init__(self, every: int):
        self.every, self.pending, self.step = max(1, int(every)), [], 0
        self.reads = 0  # host reads so far (tested: one per window)

    def add(self, t: torch.Tensor) -> list[tuple[int, torch.Tensor]]:
        self.pending.append((self.step, t))
        self.step += 1
        return self.flush() if len(self.pending) >= self.every else []

    def flush(self) -> list[tuple[int, torch.Tensor]]:
        if not self.pending:
            return []
        steps = [s for s, _ in self.pending]
        rows = torch.stack([t for _, t in self.pending]).cpu()  # the one wait of the window
        self.pending, self.reads = [], self.reads + 1
        return list(zip(steps, rows))


class Tally:
    """One epoch's sums of the read-back rows (loss parts in ``names`` order, image count
    last), accumulated on the host in step order."""

    def __init__(self):
        self.names: list[str] = []
        self.sums: dict[str, float] = {}
        self.seen = self.steps = 0

    def take(self, rows) -> int | None:
        """Add ``rows``; the step of the first non-finite loss (then nothing is added)."""
        for step, red in rows:
            if not torch.isfinite(red[self.names.index("loss")]):
                return step
            self.seen += int(red[-1])
            self.steps += 1
            for k, v in zip(self.names, red.tolist()):
                self.sums[k] = self.sums.get(k, 0.0) + v
        return None

    def mean(self, name: str) -> float:
        return self.sums.get(name, float("nan")) / max(self.steps, 1)
