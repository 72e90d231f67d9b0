"""How fast does the CLI refuse a bad argument or a missing path? (goal: < 1 s, quiet machine)

Each case runs ``kdep-cache ...`` as a fresh subprocess (interpreter start-up included) and
must exit 2 with one ``error:`` line; the median of ``--rounds`` runs, rounds interleaved
over the cases. ``python -c 'import torch'`` is timed alongside: the cost every refusal paid
before the checks moved ahead of the imports. Writes benchmarks/results/cli.json.

    .venv/bin/python benchmarks/bench_cli.py [--rounds 7] [--no-wait]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Probe, Session, add_quiet_args, usable  # noqa: E402


def cases(tmp: Path) -> dict[str, list[str]]:
    (tmp / "imgs").mkdir(exist_ok=True)
    (tmp / "store").mkdir(exist_ok=True)
    gone, out = str(tmp / "missing"), str(tmp / "out")
    return {
        "--help": ["--help"],
        "extract: missing --data": ["extract", "--data", gone, "--teacher", "resnet50",
                                    "--out", out],
        "extract: --seed -1": ["extract", "--data", str(tmp / "imgs"), "--teacher", "resnet50",
                               "--out", out, "--seed", "-1"],
        "extract: --crop-scale 0.9 0.1": ["extract", "--data", str(tmp / "imgs"), "--teacher",
                                          "resnet50", "--out", out, "--crop-scale", "0.9", "0.1"],
        "fit-svd: missing --cache": ["fit-svd", "--cache", gone, "--student", "resnet18",
                                     "--out", out],
        "fit-svd: --pts-t nan": ["fit-svd", "--cache", str(tmp / "store"), "--student",
                                 "resnet18", "--out", out, "--pts-t", "nan"],
        "train-student: missing --targets": ["train-student", "--student", "resnet18",
                                             "--targets", gone, "--out", out],
        "train-student: --lr -0.1": ["train-student", "--student", "resnet18", "--targets",
                                     str(tmp / "store"), "--out", out, "--lr", "-0.1"],
        "transfer: missing --data": ["transfer", "--student", "random:resnet18", "--data", gone,
                                     "--out", out],
        "info: missing path": ["info", gone],
        "verify: missing path": ["verify", gone],
    }


def run_once(cmd: list[str], want_rc: int | None) -> dict:
    with Probe() as pr:
        t0 = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
        wall = time.perf_counter() - t0
    if want_rc is not None and r.returncode != want_rc:
        raise SystemExit(f"{cmd}: exit {r.returncode}, expected {want_rc}: {r.stderr[-500:]}")
    return {"seconds": wall, "stderr": r.stderr.strip().splitlines()[-1:] or [""], **pr.info()}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    add_quiet_args(ap)
    args = ap.parse_args()
    exe = Path(sys.executable).with_name("kdep-cache")
    session = Session(args)
    with tempfile.TemporaryDirectory() as td:
        tmp = Path(td)
        todo = {k: [str(exe), *v] for k, v in cases(tmp).items()}
        todo["python -c 'import torch' (reference)"] = [sys.executable, "-c", "import torch"]
        samples: dict[str, list[dict]] = {k: [] for k in todo}
        for _ in range(args.rounds):
            for name, cmd in todo.items():
                rc = 0 if name == "--help" or "reference" in name else 2
                samples[name].append(run_once(cmd, rc))
        assert not (tmp / "out").exists(), "a refused run left its --out behind"
    results = {}
    for name, ss in samples.items():
        ok = usable(ss)
        results[name] = {"median_s": round(statistics.median(s["seconds"] for s in ok), 3),
                         "min_s": round(min(s["seconds"] for s in ok), 3),
                         "max_s": round(max(s["seconds"] for s in ok), 3),
                         "message": ss[0]["stderr"][0][:160]}
    allp = [s for ss in samples.values() for s in ss]
    doc = {"command": " ".join([Path(sys.executable).name, *sys.argv]),
           "settings": {"rounds": args.rounds, "executable": str(exe.relative_to(ROOT))
                        if exe.is_relative_to(ROOT) else str(exe)},
           "goal": "argument / path error in < 1 s on a quiet machine",
           "results": results, **session.record(allp)}
    out = ROOT / "benchmarks" / "results" / "cli.json"
    out.write_text(json.dumps(doc, indent=1) + "\n")
    w = max(map(len, results))
    for name, r in results.items():
        print(f"{name:<{w}}  {r['median_s']:6.3f} s  (min {r['min_s']:.3f}, max {r['max_s']:.3f})"
              f"  {r['message'][:70]}")
    print(f"contended: {doc['contended']} {doc['contended_reasons']}")


if __name__ == "__main__":
    main()
