"""Stage 3: transfer a pre-trained student (or the cache's teacher, as the reference row) to a
downstream task: classification (:mod:`.classification`: linear probe or the paper's
fine-tune), segmentation and detection (:mod:`.dense`). :mod:`.run` is the shared runner
(students, seeds, leakage and fairness checks, ``results.json``); :mod:`.compare` tabulates
several ``results.json`` files.
"""

__all__ = ["TransferConfig", "transfer"]


def __getattr__(name: str):
    """``TransferConfig`` / ``transfer`` on first use: ``compare`` (reading JSON) imports this
    package without torch."""
    if name in __all__:
        from . import run
        return getattr(run, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
