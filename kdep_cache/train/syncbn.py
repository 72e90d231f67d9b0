"""``--sync-bn``: batch statistics over the global batch of all ranks.

On CUDA this is torch's own ``nn.SyncBatchNorm``. torch's version refuses CPU tensors,
so CPU ranks (gloo) use :class:`GlobalBatchNorm2d`, which computes the statistics in two
passes (mean, then the centred sum of squares, like the one-process kernel) with
differentiable all-reduces (their backward all-reduces the gradient as well). Running
statistics are updated as ``nn.BatchNorm2d`` updates them, so a 2-rank run with global batch
B follows a one-process run with batch B. The module subclasses ``nn.BatchNorm2d`` and
keeps its state-dict keys, so saved students still load into torchvision strictly.
"""

from __future__ import annotations

import torch
import torch.distributed as tdist
from torch import nn
from torch.distributed.nn.functional import all_reduce


class GlobalBatchNorm2d(nn.BatchNorm2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.training and tdist.is_initialized() and tdist.get_world_size() > 1):
            return super().forward(x)
        dims = (0, 2, 3)
        count = torch.tensor([x.shape[0] * x.shape[2] * x.shape[3]], dtype=x.dtype,
                             device=x.device)
        sums = all_reduce(torch.cat([x.sum(dims), count]))
        m = sums[-1]
        mean = sums[:-1] / m
        centred = x - mean.view(1, -1, 1, 1)
        var = all_reduce((centred * centred).sum(dims)) / m
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                f = (1.0 / float(self.num_batches_tracked) if self.momentum is None
                     else self.momentum)
                self.running_mean.mul_(1 - f).add_(mean.detach(), alpha=f)
                self.running_var.mul_(1 - f).add_(var.detach() * (m / (m - 1)), alpha=f)
        y = centred * torch.rsqrt(var + self.eps).view(1, -1, 1, 1)
        if self.affine:
            y = y * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y


def sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every ``BatchNorm2d`` of ``model`` synchronized across ranks (same parameters)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    for name, child in model.named_children():
        if type(child) is nn.BatchNorm2d:
            g = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                  child.track_running_stats)
            g.load_state_dict(child.state_dict())
            g.to(next(child.buffers(), torch.empty(0)).device)
            setattr(model, name, g)
        else:
            sync_batchnorm(child, device)
    return model
