"""Like with like: the settings a transfer result was measured under (mode, input size,
precision, epochs), shown by ``compare`` and the transfer summary, and the check that the rows
of one ``compare`` column were measured the same way.

Within a column, rows of one mode are compared: their size, precision and epochs must agree.
Rows of different modes are labelled ``[linear]`` / ``[finetune]`` and sit side by side by
design (the quickstart's table); a mode difference is reported only when a student is present
in one mode and missing from the other, i.e. when the column pits one student's linear probe
against another's fine-tune.

A teacher row (``transfer --student teacher:CACHE``) is the reference, measured by design at
the teacher's own input size and precision (fp32 on CPU): it is left out of these checks and
listed apart in the settings line ("teacher (reference): ...").
"""

from __future__ import annotations

from typing import NamedTuple

from .reference import KIND as TEACHER

FIELDS = {"image_size": "input size", "precision": "precision", "epochs": "epochs"}


class Setting(NamedTuple):
    mode: str
    image_size: int | None
    precision: str | None
    epochs: int | None           # None for a linear probe (no epochs)
    teacher: bool = False        # the reference row: not held to the students' settings

    def text(self) -> str:
        size = "? px" if self.image_size is None else f"{self.image_size} px"
        parts = [self.mode, size, self.precision or "precision ?"]
        if self.epochs is not None:
            parts.append(f"{self.epochs} epochs")
        return ", ".join(parts)


def setting_of(result: dict) -> Setting:
    """The settings recorded in a ``results.json`` (older results may lack some: None)."""
    p = result.get("protocol") or {}
    mode = p.get("mode", "?")
    return Setting(mode, p.get("image_size"), p.get("precision"),
                   p.get("epochs") if mode != "linear" else None,
                   (result.get("student") or {}).get("kind") == TEACHER)


def headline(p: dict) -> str:
    """``"32 px, fp32"`` for the transfer summary."""
    s = setting_of({"protocol": p})
    return s.text().split(", ", 1)[1]


def _base(row: str) -> str:
    return row.rsplit(" [", 1)[0] if row.endswith("]") else row


def column_notes(col: str, rows: dict) -> list[str]:
    """One line per unfair difference among ``rows`` ({row label: Setting}) of column ``col``."""
    notes = []
    by_mode: dict[str, dict] = {}
    rows = {row: s for row, s in rows.items() if not s.teacher}  # the reference: its own
    for row, s in rows.items():
        by_mode.setdefault(s.mode, {})[row] = s
    for mode, group in by_mode.items():
        diffs = []
        for f, what in FIELDS.items():
            vals = {row: getattr(s, f) for row, s in group.items()}
            if len(set(vals.values())) > 1:
                diffs.append(f"{what} (" + ", ".join(f"{r}: {v}" for r, v in vals.items()) + ")")
        if diffs:
            notes.append(f"column {col}: the {mode} rows differ in {'; '.join(diffs)}: not like "
                         "with like (pass the same --image-size, --precision and --epochs to "
                         "every transfer of a column)")
    if len(by_mode) > 1:
        students = {m: {_base(r) for r in g} for m, g in by_mode.items()}
        every = set.union(*students.values())
        if any(students[m] != every for m in students):
            notes.append(f"column {col}: modes differ (" + ", ".join(
                f"{r}: {s.mode}" for r, s in rows.items()) + "): a linear probe and a fine-tune "
                "are not comparable; run every student in each mode")
    return notes


def column_settings(col: str, rows: dict) -> str:
    """``"cifar: linear, 32 px, fp32; finetune, 32 px, fp32, 10 epochs"`` (distinct settings)."""
    seen = []
    for s in rows.values():
        text = f"teacher (reference): {s.text()}" if s.teacher else s.text()
        if text not in seen:
            seen.append(text)
    return f"{col}: " + "; ".join(seen)
