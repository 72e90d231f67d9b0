"""Stage 3: transfer a pre-trained student to a downstream classification dataset.

``linear``: frozen backbone, pooled post-activation features, a logistic-regression probe whose
C is chosen on a held-out part of the TRAIN split; ``finetune``: the paper's protocol (full
fine-tuning with a new linear head through :func:`kdep_cache.train.loop.train`).
:mod:`.compare` tabulates several ``results.json`` files.
"""

from .run import TransferConfig, transfer

__all__ = ["TransferConfig", "transfer"]
