"""``compare``: several ``results.json`` -> one table (rows = students, columns = datasets +
mean, cells = mean ± std over seeds) as aligned text, CSV, Markdown, and an optional chart.

``--metric``: ``final`` (each result's headline: top-1 at the final epoch or of the linear
probe; mIoU for segmentation; AP for detection), ``best`` (best-epoch top-1, the paper's
fine-tuning number; dense results have only a final score), ``balanced`` (balanced
accuracy), ``class:NAME`` (that class's accuracy), ``miou``, ``pixel_acc``, ``ap``, ``ap50``,
``ap75``. Columns whose unit is not top-1 carry it in their name (``voc mIoU``). With a teacher
row (``transfer --student teacher:CACHE``), the other linear rows show their score as a
percentage of the teacher's (:mod:`.reference`)."""

from __future__ import annotations

import statistics
from pathlib import Path

from ..cache import shapes
from ..cache.schema import TRANSFER
from ..errors import ArtifactError, InputError
from ..names import RESULTS
from ..storage.fsio import read_json
from .fairness import column_notes, column_settings, setting_of
from .reference import percent_of_teacher, several_teachers_note, teacher_rows
from .table import TOP1, UNITS, Cell, Table, format_text, plot, to_csv, to_json, to_markdown

__all__ = ["Cell", "Table", "build_table", "format_text", "load_result", "plot", "to_csv",
           "to_json", "to_markdown"]
MEAN = "mean"
METRICS = ("final", "best", "balanced", "class:NAME", "miou", "pixel_acc", "ap", "ap50", "ap75")
DENSE = {"segmentation": {"final": "miou", "best": "miou", "miou": "miou",
                          "pixel_acc": "pixel_acc"},
         "detection": {"final": "ap", "best": "ap", "ap": "ap", "ap50": "ap50", "ap75": "ap75"}}


def load_result(path: str | Path) -> dict:
    p = Path(path)
    if not p.exists():
        raise InputError(f"{path} does not exist")
    p = p / RESULTS if p.is_dir() else p
    if not p.is_file():
        raise InputError(f"{path} holds no {RESULTS} (is the transfer finished?)")
    r = read_json(p)
    if not isinstance(r, dict) or r.get("format") != TRANSFER:
        raise ArtifactError(f"{p} is not a transfer result (format {TRANSFER!r})")
    shapes.results(r, p)  # one line for valid JSON of another shape
    r["_path"] = str(p)
    return r


def build_table(paths: list[str], metric: str = "final") -> Table:
    """Collect ``paths`` (result dirs or files) into a :class:`Table`."""
    if metric not in METRICS and not (metric.startswith("class:") and len(metric) > 6):
        raise InputError(f"--metric must be one of {', '.join(METRICS)}, got {metric!r}")
    if not paths:
        raise InputError("compare needs at least one RESULT_DIR")
    missing = [p for p in paths if Path(p).is_dir() and not (Path(p) / RESULTS).is_file()]
    if len(missing) == len(paths):
        load_result(paths[0])  # nothing finished: the one-line refusal
    results = [load_result(p) for p in paths if p not in missing]
    classif = [r for r in results if r["protocol"].get("task", "classification") not in DENSE]
    mixed = len({r["protocol"]["mode"] for r in classif}) > 1  # dense tasks always fine-tune
    names: dict[str, set] = {}
    for r in results:
        names.setdefault(Path(r["dataset"]["path"]).name, set()).add(r["dataset"]["fingerprint"])
    rows, columns, cells, where, units, settings, kinds = [], [], {}, {}, [], {}, {}
    for r in results:
        row = r["student"]["label"] + (f" [{r['protocol']['mode']}]" if mixed and r in classif
                                       else "")
        col = Path(r["dataset"]["path"]).name
        if len(names[col]) > 1:
            col += f"@{r['dataset']['fingerprint'][:8]}"
        unit, by_seed = seed_values(r, metric)
        col += "" if unit == TOP1 else f" {unit}"
        units += [unit] if unit not in units else []
        vals = list(by_seed.values())
        s = {"mean": statistics.fmean(vals), "n": len(vals),
             "std": statistics.stdev(vals) if len(vals) > 1 else None}
        if (row, col) in cells:  # the same label from another run: merge its seeds
            old = cells[row, col].by_seed
            if set(old) & set(by_seed):
                raise InputError(f"{where[row, col]} and {r['_path']} both hold seed "
                                 f"{sorted(set(old) & set(by_seed))[0]} of {row} on {col}; "
                                 "give one of them another --label")
            by_seed = {**old, **by_seed}
            vals = list(by_seed.values())
            s = {"mean": statistics.fmean(vals), "n": len(vals),
                 "std": statistics.stdev(vals) if len(vals) > 1 else None}
        cells[row, col], where[row, col] = Cell(s["mean"], s["std"], s["n"], by_seed), r["_path"]
        settings.setdefault(col, {})[row] = setting_of(r)
        kinds[row] = r["student"].get("kind")
        rows += [row] if row not in rows else []
        columns += [col] if col not in columns else []
    for row in rows:
        mean = _row_mean([cells.get((row, c)) for c in columns])
        if mean is not None:
            cells[row, MEAN] = mean
    teachers, percent, notes = teacher_rows(kinds), {}, []
    if len(teachers) == 1:
        modes = {(row, c): s.mode for c in columns for row, s in settings[c].items()}
        for row in rows:
            row_modes = {m for (r, _), m in modes.items() if r == row}
            modes[row, MEAN] = row_modes.pop() if len(row_modes) == 1 else None
        percent = percent_of_teacher(cells, rows, columns + [MEAN], teachers[0], modes)
    elif teachers:
        notes.append(several_teachers_note(teachers))
    return Table(metric, rows, columns + [MEAN], cells, units, missing=missing,
                 settings=[column_settings(c, settings[c]) for c in columns],
                 notes=notes + [n for c in columns for n in column_notes(c, settings[c])],
                 teacher=teachers[0] if len(teachers) == 1 else None, percent=percent)


def seed_values(r: dict, metric: str) -> tuple[str, dict]:
    """(unit label, {seed: value}) of ``metric`` in the result ``r``."""
    task, mode = r["protocol"].get("task", "classification"), r["protocol"]["mode"]
    name = None
    if task in DENSE:
        key = DENSE[task].get(metric)
        unit = UNITS.get(key)
    elif metric in ("final", "best"):
        key = "test_top1" if mode == "linear" else f"{metric}_top1"
        unit = TOP1
    elif metric == "balanced":
        key, unit = ("test" if mode == "linear" else "final") + "_balanced", "balanced acc."
    elif metric.startswith("class:"):
        name = metric[6:]
        key, unit = ("test" if mode == "linear" else "final") + "_per_class", f"{name} acc."
    else:
        key = None
    if key is None:
        raise InputError(f"--metric {metric} does not apply to {r['_path']} (a {task} result)")
    out = {}
    for x in r["seeds"]:
        v = x.get(key)
        if v is None:
            raise ArtifactError(f"{r['_path']} records no {key} (written by an older version, "
                                "or the run has no such score): rerun the transfer")
        if name is not None:
            if name not in v:
                raise InputError(f"--metric {metric}: {r['_path']} has no class {name!r} "
                                 f"(classes: {', '.join(list(v)[:8])})")
            v = v[name]
            if v is None:
                raise InputError(f"--metric {metric}: class {name!r} has no test image in "
                                 f"{r['_path']}")
        out[int(x["seed"])] = float(v)
    return unit, out


def _row_mean(row: list[Cell | None]) -> Cell | None:
    """Mean over datasets (only for complete rows); ± over seeds when every dataset has them."""
    if any(c is None for c in row):
        return None
    seeds = set(row[0].by_seed)
    if len(seeds) > 1 and all(set(c.by_seed) == seeds for c in row):
        per_seed = {s: statistics.fmean(c.by_seed[s] for c in row) for s in sorted(seeds)}
        vals = list(per_seed.values())
        return Cell(statistics.fmean(vals), statistics.stdev(vals), len(vals), per_seed)
    return Cell(statistics.fmean(c.mean for c in row), None, len(row))
