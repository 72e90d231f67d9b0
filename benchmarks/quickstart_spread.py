"""How much the quickstart's table moves: the whole `pipelines/quickstart.sh`, N times per
intra-op thread count, each run's table and the spread per row (issue 24.3).

Every run gets its own OUT folder under --work and pins its threads with KDEP_THREADS (all
stages). Runs with the same threads and precision are expected to print the same table
(``bitwise_same``); another thread count changes float rounding in training, which moves
the table. The JSON is rewritten after every run, and a rerun of the same command skips the
runs it holds and resumes an interrupted one (the quickstart resumes its own stages), so it
can be stopped at any time. Run on a quiet machine (it waits for one, as the other scripts):

    .venv/bin/python benchmarks/quickstart_spread.py --threads 2,1 --runs 3

(--dry-run prints the runs and writes nothing.)
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, add_quiet_args, environment, wait_for_quiet  # noqa: E402

SCRIPT = ROOT / "pipelines" / "quickstart.sh"


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", default="2,1", help="intra-op thread counts, e.g. 2,1")
    ap.add_argument("--runs", type=int, default=3, help="runs per thread count")
    ap.add_argument("--work", default="quickstart-spread-out", help="one OUT folder per run")
    ap.add_argument("--out", default="benchmarks/results/quickstart-spread.json")
    ap.add_argument("--set", action="append", default=[], metavar="VAR=VALUE",
                    help="a quickstart variable for every run (EPOCHS=40, SIZE=64, ...)")
    ap.add_argument("--dry-run", action="store_true", help="print the runs, run nothing")
    add_quiet_args(ap)
    a = ap.parse_args(argv)
    try:
        a.threads = [int(t) for t in a.threads.split(",")]
    except ValueError:
        ap.error(f"--threads takes counts like 2,1; got {a.threads!r}")
    if not a.threads or min(a.threads) < 1 or a.runs < 1:
        ap.error("--threads must be >= 1 and --runs >= 1")
    bad = [s for s in a.set if "=" not in s or not s.split("=", 1)[0].isidentifier()]
    if bad:
        ap.error(f"--set takes VAR=VALUE; got {bad[0]!r}")
    a.set = dict(s.split("=", 1) for s in a.set)
    return a


def plan(a) -> list[dict]:
    return [{"key": f"t{t}-r{i}", "threads": t, "run": i,
             "out": str(Path(a.work).resolve() / f"t{t}-r{i}")}
            for t in a.threads for i in range(a.runs)]


def read_table(out: Path) -> dict:
    """{row label: the dataset's top-1} from the quickstart's table.csv."""
    with open(out / "table.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    col = next(c for c in rows[0] if c.endswith(" mean") and c != "mean mean")
    return {r["student"]: float(r[col]) for r in rows}


def spread(runs: list[dict]) -> dict:
    """Per thread count and over all runs: each row's values, min, max, mean, std; and
    whether the runs of one thread count printed the same table."""
    out = {}
    groups = {f"threads={t}": [r for r in runs if r["threads"] == t]
              for t in sorted({r["threads"] for r in runs})}
    for name, rs in {**groups, "all": runs}.items():
        if not rs:
            continue
        rows = {}
        for label in rs[0]["table"]:
            v = [r["table"][label] for r in rs if label in r["table"]]
            rows[label] = {"values": v, "min": min(v), "max": max(v),
                           "mean": round(statistics.mean(v), 3),
                           "std": round(statistics.stdev(v), 3) if len(v) > 1 else None}
        out[name] = {"runs": len(rs), "rows": rows,
                     "bitwise_same": all(r["table"] == rs[0]["table"] for r in rs)}
    return out


def run_one(p: dict, a) -> dict:
    env = {**os.environ, **a.set, "OUT": p["out"], "KDEP_THREADS": str(p["threads"])}
    t0 = time.perf_counter()
    r = subprocess.run(["bash", str(SCRIPT)], env=env, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"{p['key']}: quickstart exited {r.returncode}; rerun this command "
                         "to resume it")
    out = Path(p["out"])
    side = json.loads((out / "r18-kdep" / "student.json").read_text())
    return {**p, "table": read_table(out), "wall_s": round(time.perf_counter() - t0, 1),
            "precision": side.get("settings", {}).get("precision")}


def main(argv=None) -> None:
    a = parse_args(argv)
    todo = plan(a)
    path = Path(a.out)
    old = json.loads(path.read_text()) if path.is_file() else {}
    same = old.get("settings") == {"set": a.set}
    done = {r["key"]: r for r in old.get("runs", [])} if same else {}
    if a.dry_run:
        for p in todo:
            state = "done" if p["key"] in done else "to run"
            print(f"{p['key']} [{state}]: KDEP_THREADS={p['threads']} OUT={p['out']}",
                  " ".join(f"{k}={v}" for k, v in a.set.items()), "bash", SCRIPT)
        return
    if old and not same:
        raise SystemExit(f"{path} holds runs with other --set values ({old.get('settings')}); "
                         "use another --out")
    quiet = wait_for_quiet(a.load_threshold, 20.0, a.max_wait, not a.no_wait)
    for p in todo:
        if p["key"] in done:
            continue
        done[p["key"]] = run_one(p, a)
        runs = [done[q["key"]] for q in todo if q["key"] in done]
        record = {"benchmark": "quickstart-spread", "command": "python "
                  "benchmarks/quickstart_spread.py " + " ".join(sys.argv[1:]),
                  "settings": {"set": a.set}, "runs": runs, "spread": spread(runs),
                  "quiet_wait": quiet, "environment": environment()}
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, path)
        print(json.dumps(record["spread"], indent=1), flush=True)


if __name__ == "__main__":
    main()
