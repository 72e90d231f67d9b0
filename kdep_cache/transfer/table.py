"""The table ``compare`` builds (:class:`Table` of :class:`Cell`) and its formats: aligned text,
CSV, Markdown and a bar chart. With a teacher row, a cell of another linear row carries its
percentage of the teacher's score, ``46.40 (78%)``; the CSV has a ``% of teacher`` column per
column, the JSON a ``percent_of_teacher`` per such cell."""

from __future__ import annotations

import csv
import io
import json
import logging
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import InputError
from ..storage.fsio import atomic_write

TOP1 = "top-1"
UNITS = {"miou": "mIoU", "pixel_acc": "pixel acc.", "ap": "AP", "ap50": "AP50",
         "ap75": "AP75"}


@dataclass
class Cell:
    mean: float
    std: float | None
    n: int
    by_seed: dict = field(default_factory=dict)

    def text(self) -> str:
        return f"{self.mean:.2f}" + ("" if self.std is None else f" ± {self.std:.2f}")


@dataclass
class Table:
    metric: str
    rows: list[str]
    columns: list[str]
    cells: dict  # (row, column) -> Cell
    units: list = field(default_factory=lambda: [TOP1])
    missing: list = field(default_factory=list)  # given folders without results.json
    settings: list = field(default_factory=list)  # per column: mode, size, precision, epochs
    notes: list = field(default_factory=list)    # warnings about the comparison itself
    teacher: str | None = None                   # the reference row (transfer teacher:CACHE)
    percent: dict = field(default_factory=dict)  # (row, column) -> 100 * mean / teacher's

    @property
    def title(self) -> str:
        which = "best epoch (as in the paper)" if self.metric == "best" else "final epoch"
        classification = any(u not in UNITS.values() for u in self.units)
        how = f"; linear probe, or fine-tuning {which}" if classification else "; final epoch"
        return f"test {' / '.join(self.units)} % (mean ± std over seeds{how})"

    @property
    def percent_note(self) -> list[str]:
        """The line that says what the parenthesised percentages are (none without them)."""
        if not self.percent:
            return []
        return [f"(N%) = the row's score as a percentage of {self.teacher}'s on the same "
                "column (linear-probe rows)"]

    def text(self, row: str, col: str) -> str:
        if (row, col) not in self.cells:
            return "-"
        pct = self.percent.get((row, col))
        return self.cells[row, col].text() + ("" if pct is None else f" ({pct:.0f}%)")


def _grid(t: Table) -> list[list[str]]:
    return [["student"] + t.columns] + [
        [row] + [t.text(row, c) for c in t.columns]
        for row in t.rows]


def format_text(t: Table) -> str:
    grid = _grid(t)
    widths = [max(len(r[i]) for r in grid) for i in range(len(grid[0]))]
    line = lambda r: "  ".join(v.ljust(w) if i == 0 else v.rjust(w)  # noqa: E731
                               for i, (v, w) in enumerate(zip(r, widths))).rstrip()
    sep = "  ".join("-" * w for w in widths)
    extra = t.percent_note + [f"measured at: {x}" for x in t.settings]
    return "\n".join([t.title, line(grid[0]), sep] + [line(r) for r in grid[1:]] + extra) + "\n"


def to_markdown(t: Table) -> str:
    grid = _grid(t)
    out = [f"_{t.title}_", "", "| " + " | ".join(grid[0]) + " |",
           "|" + "|".join(["---"] + ["---:"] * (len(grid[0]) - 1)) + "|"]
    out += ["| " + " | ".join(r) + " |" for r in grid[1:]]
    out += ["", *[f"_{x}_  " for x in t.percent_note]] if t.percent else []
    out += ["", *[f"_measured at: {x}_  " for x in t.settings]] if t.settings else []
    return "\n".join(out) + "\n"


def to_csv(t: Table) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    keys = ("mean", "std", "n") + (("% of teacher",) if t.teacher else ())
    w.writerow(["student"] + [f"{c} {k}" for c in t.columns for k in keys])
    for row in t.rows:
        vals = [row]
        for c in t.columns:
            cell, pct = t.cells.get((row, c)), t.percent.get((row, c))
            vals += (["", "", ""] if cell is None else
                     [f"{cell.mean:.4f}", "" if cell.std is None else f"{cell.std:.4f}", cell.n])
            vals += ([] if not t.teacher else ["" if pct is None else f"{pct:.4f}"])
        w.writerow(vals)
    return buf.getvalue()


def to_json(t: Table) -> str:
    """The table as data: rows, columns, each cell's mean / std / n / per-seed values and, with
    a teacher row, its ``percent_of_teacher``; the settings lines and the notes."""
    cells = [{"student": row, "column": c, "mean": cell.mean, "std": cell.std, "n": cell.n,
              "by_seed": {str(k): v for k, v in cell.by_seed.items()},
              **({"percent_of_teacher": t.percent[row, c]} if (row, c) in t.percent else {})}
             for row in t.rows for c in t.columns if (cell := t.cells.get((row, c)))]
    return json.dumps({"title": t.title, "metric": t.metric, "rows": t.rows,
                       "columns": t.columns, "teacher": t.teacher, "cells": cells,
                       "measured_at": t.settings, "notes": t.notes, "missing": t.missing},
                      indent=1) + "\n"


def plot(t: Table, path: str | Path) -> None:
    """Grouped bar chart (one group per column, one bar per student, std error bars)."""
    logging.getLogger("matplotlib").setLevel(logging.WARNING)  # no font_manager INFO lines
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("--plot needs matplotlib: pip install matplotlib (or "
                         "pip install 'kdep-cache[plot]')") from None
    width = 0.8 / max(len(t.rows), 1)
    fig_w = max(4.0, 1.2 * len(t.columns) * max(1, len(t.rows)) / 2)
    fig, ax = plt.subplots(figsize=(fig_w, 4))
    for i, row in enumerate(t.rows):
        xs = [j + (i - (len(t.rows) - 1) / 2) * width for j, c in enumerate(t.columns)
              if (row, c) in t.cells]
        cs = [t.cells[row, c] for c in t.columns if (row, c) in t.cells]
        ax.bar(xs, [c.mean for c in cs], width, yerr=[c.std or 0.0 for c in cs], capsize=3,
               label=row)
    ax.set_xticks(range(len(t.columns)), [textwrap.fill(c, 12) for c in t.columns])  # no overlap
    ax.set_ylabel(f"test {' / '.join(t.units)} (%)")
    ax.set_title(textwrap.fill(t.title, width=int(fig_w * 13)), fontsize=8)  # never cut
    ax.legend(fontsize=8)
    fig.tight_layout()
    fmt = Path(path).suffix.lstrip(".").lower() or "png"
    try:
        atomic_write(path, lambda p: fig.savefig(p, format=fmt, dpi=120))
    except ValueError as e:  # unknown image format
        raise InputError(f"--plot {path}: {e}") from None
    finally:
        plt.close(fig)
