"""The teacher as the reference row (torch-free): ``--student teacher:CACHE`` (its spec and the
refusal to fine-tune it) and ``compare``'s "% of teacher" figures.

In a ``compare`` table holding one teacher row (``results.json`` student kind ``teacher``),
every other row gets, per column, its mean score as a percentage of the teacher's mean on the
same column (``100 * row / teacher``; the mean column: of the two row means). Only rows
measured in the teacher's mode (the linear probe) get one: a fine-tune against the teacher's
linear probe is not like with like. Two teachers in one table: no percentages (a note says so).
"""

from __future__ import annotations

from ..checks.teacher_spec import PREFIX, is_teacher, refuse_training  # noqa: F401  (re-exported)

KIND = "teacher"     # results.json's student.kind for this row


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
