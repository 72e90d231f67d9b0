"""The teacher as the reference row (torch-free): ``--student teacher:CACHE`` (its spec and the
refusal to fine-tune it) and ``compare``'s "% of teacher" figures.

In a ``compare`` table holding one teacher row (``results.json`` student kind ``teacher``),
every other row gets, per column, its mean score as a percentage of the teacher's mean on the
same column (``100 * row / teacher``; the mean column: of the two row means). Only rows
measured in the teacher's mode (the linear probe) get one: a fine-tune against the teacher's
linear probe is not like with like. Two teachers in one table: no percentages (a note says so).
"""

from __future__ import annotations

from ..errors import InputError

PREFIX = "teacher:"  # = models.from_cache.PREFIX (that module imports torch; a test ties them)
KIND = "teacher"     # results.json's student.kind for this row
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


def teacher_rows(kinds: dict) -> list[str]:
    """The rows ({row: student kind}) that are a teacher."""
    return [row for row, kind in kinds.items() if kind == KIND]


def percent_of_teacher(cells: dict, rows: list[str], columns: list[str], teacher: str,
                       modes: dict) -> dict:
    """{(row, column): 100 * mean / teacher's mean} for the rows in the teacher's mode.

    ``cells``: {(row, column): Cell}; ``modes``: {(row, column): mode} of each measured cell
    (the mean column: a row's modes over the columns)."""
    out = {}
    for col in columns:
        ref = cells.get((teacher, col))
        if ref is None or not ref.mean:
            continue
        for row in rows:
            cell = cells.get((row, col))
            if row == teacher or cell is None or modes.get((row, col)) != modes.get(
                    (teacher, col)):
                continue
            out[row, col] = 100.0 * cell.mean / ref.mean
    return out


def several_teachers_note(teachers: list[str]) -> str:
    return (f"several teacher rows ({', '.join(teachers)}): no % of teacher; compare each "
            "teacher's students in a table of their own")
