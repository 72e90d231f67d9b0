"""Training objectives. Each returns ``{"loss": ..., <named parts>}`` from the student's
outputs and the batch's targets; all share one training loop (:mod:`kdep_cache.train.loop`).

- ``kdep``: MSE(student pre-activation feature, aligned target) x weight (the paper);
- ``conv1x1-pre`` / ``conv1x1-post`` / ``conv1x1-margin``: a learned linear map (a 1x1 conv
  on the pooled feature) from the student feature to the RAW teacher feature, before or
  after the activation, or Heo et al.'s margin-ReLU target with partial L2 (paper Tab. 2/3);
- ``logits``: KL divergence to the cached teacher logits at temperature T (paper Tab. 8);
- ``supervised``: cross-entropy on folder labels (the paper's SP baseline; fine-tuning too);
- ``online``: like ``kdep`` but the target is computed by running the teacher live;
- ``kdep-ml``: ``kdep`` + per-layer G x G stage-map terms (:mod:`.objectives_ml`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ..names import OBJECTIVES  # noqa: F401  (defined once, there; re-exported)

# objective -> the per-batch input it trains on (the data source is opened from this)
NEEDS = {"kdep": "targets", "online": "teacher", "conv1x1-pre": "features",
         "conv1x1-margin": "features", "conv1x1-post": "post", "logits": "logits",
         "supervised": "labels", "kdep-ml": "layer-targets"}  # kdep-ml: objectives_ml.py


class Objective(nn.Module):
    """Base: ``needs`` names the per-batch inputs; ``student_out`` what the student computes."""

    needs: str = "targets"         # targets | features | post | logits | labels | teacher
    want_logits: bool = False
    want_post: bool = False

    def __init__(self, weight: float = 1.0):
        super().__init__()
        self.weight = weight


class KDEP(Objective):
    needs = NEEDS["kdep"]

    def forward(self, out, target):
        mse = F.mse_loss(out["pre"].float(), target.float())
        return {"loss": self.weight * mse, "mse": mse}


class Conv1x1(Objective):
    """Learned map student -> teacher width; trained jointly, dropped after pre-training."""

    def __init__(self, d_student: int, d_teacher: int, variant: str, weight: float = 1.0,
                 margin: torch.Tensor | None = None):
        super().__init__(weight)
        self.variant = variant
        self.needs = NEEDS[f"conv1x1-{variant}"]
        self.want_post = variant == "post"
        self.proj = nn.Linear(d_student, d_teacher)
        if margin is not None:
            self.register_buffer("margin", margin.float())

    def forward(self, out, target):
        s = self.proj(out["post"] if self.variant == "post" else out["pre"]).float()
        t = target.float()
        if self.variant == "margin":  # Heo et al. 2019: margin-ReLU target, partial L2
            t = torch.maximum(t, self.margin)
            mask = ((s > t) | (t > 0)).float()
            mse = ((s - t) ** 2 * mask).mean()
        else:
            mse = F.mse_loss(s, t)
        return {"loss": self.weight * mse, "mse": mse}


class LogitsKD(Objective):
    needs = NEEDS["logits"]
    want_logits = True

    def __init__(self, temperature: float = 4.0, weight: float = 1.0):
        super().__init__(weight)
        self.t = temperature

    def forward(self, out, target):
        t = self.t
        kl = F.kl_div(F.log_softmax(out["logits"].float() / t, 1),
                      F.log_softmax(target.float() / t, 1), reduction="batchmean",
                      log_target=True) * t * t
        return {"loss": self.weight * kl, "kl": kl}


class Supervised(Objective):
    needs = NEEDS["supervised"]
    want_logits = True

    def forward(self, out, target):
        ce = F.cross_entropy(out["logits"].float(), target)
        acc = (out["logits"].argmax(1) == target).float().mean()
        return {"loss": self.weight * ce, "ce": ce, "acc": acc}


class Online(KDEP):
    """Same loss as :class:`KDEP`; the target is computed live by ``self.teacher``."""

    needs = NEEDS["online"]

    def __init__(self, teacher: nn.Module, projection, weight: float = 1.0):
        super().__init__(weight)
        self.teacher = [teacher]  # a list: keep it out of parameters() and state_dict()
        self.projection = projection

    @torch.no_grad()
    def target(self, x):
        return self.projection.apply_torch(self.teacher[0](x)["pre"].float())


def margins_from_features(feats) -> torch.Tensor:
    """Per-channel E[x | x < 0] of raw teacher features (Heo et al.'s margin), streamed."""
    neg_sum, neg_cnt = None, None
    for x in feats:
        x = torch.from_numpy(np.asarray(x, dtype=np.float64))
        neg = torch.clamp(x, max=0)
        s, c = neg.sum(0), (x < 0).sum(0)
        neg_sum = s if neg_sum is None else neg_sum + s
        neg_cnt = c if neg_cnt is None else neg_cnt + c
    return (neg_sum / neg_cnt.clamp(min=1)).float()
