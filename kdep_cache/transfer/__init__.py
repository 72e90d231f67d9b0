"""Stage 3: transfer a pre-trained student to a downstream classification dataset.

``linear``: frozen backbone, pooled post-activation features, a logistic-regression probe whose
C is chosen on a held-out part of the TRAIN split; ``finetune``: the paper's protocol (full
fine-tuning with a new linear head through :func:`kdep_cache.train.loop.train`).
:mod:`.compare` tabulates several ``results.json`` files.
"""

__all__ = ["TransferConfig", "transfer"]


def __getattr__(name: str):
    """``TransferConfig`` / ``transfer`` on first use: ``compare`` (reading JSON) imports this
    package without torch."""
    if name in __all__:
        from . import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
