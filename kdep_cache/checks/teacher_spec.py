"""``--student teacher:CACHE`` as a spec (torch-free): the prefix, the test, and the refusal to
fine-tune a teacher, which the CLI's early checks and ``transfer`` both apply.
"""

from __future__ import annotations

from ..errors import InputError

PREFIX = "teacher:"  # = models.from_cache.PREFIX (that module imports torch; a test ties them)
NEVER_TRAINED = "the teacher is never fine-tuned here: it may be large; use --mode linear"


def is_teacher(spec: str | None) -> bool:
    return str(spec or "").startswith(PREFIX)


def refuse_training(spec: str | None, mode: str | None, task: str | None) -> None:
    """One line, before any work, for a teacher with ``--mode finetune`` or a dense task."""
    if not is_teacher(spec):
        return
    if task not in (None, "classification"):
        raise InputError(f"--student {spec} --task {task}: {task} always fine-tunes, and "
                         f"{NEVER_TRAINED} (classification)")
    if mode == "finetune":
        raise InputError(f"--student {spec} --mode finetune: {NEVER_TRAINED}")
