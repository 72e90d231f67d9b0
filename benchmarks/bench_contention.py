"""N student trainings at once on this machine: does each keep its fair share (1/N of solo)?

People run several students side by side ("pre-train once, distill to all"). Each training
runs the real CLI (`kdep-cache train-student`, ResNet-18) on the same small cache, by default
at the quickstart's size, batch, lr and precision (64 px, batch 32, lr 0.05, --precision
auto = bf16 on CPUs with native bf16); steady-state img/s is the median over epochs 2.. of
each run's own metrics.jsonl. For N = 1, 2, 3 processes started together (or --stagger
seconds apart), per configuration:

- ``defaults``: what the CLI does now: intra-op threads and loader workers chosen from the
  cores this process may use, the load it sees at start and the trainings started beside it
  (kdep_cache/cpu_share.py), GOMP_SPINCOUNT=1000 (kdep_cache/cli.py);
- ``old``: the defaults before (all cores' threads via KDEP_THREADS, --workers 2);
- ``before``: old + OpenMP's default wait policy (idle threads spin before sleeping);
- ``passive``: OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once);
- ``threads1``: passive + one intra-op thread per training (KDEP_THREADS=1);
- ``spin1k`` / ``spin10k`` / ``spin100k``: the default policy with a shorter spin before sleeping
  (GOMP_SPINCOUNT 1,000 / 10,000 / 100,000; libgomp's default is 300,000).

fair_share = (img/s of one of N) / (solo img/s / N); goal (issue 23.20) >= 0.8 for N = 2, 3
with ``defaults``, with solo speed within 5 % of ``old``. To be run on a quiet machine:

    .venv/bin/python benchmarks/bench_contention.py --configs old,defaults \
        --out benchmarks/results/contention-defaults.json

(--dry-run prints the commands and writes nothing.)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, Session, add_quiet_args, pick_files  # noqa: E402

KDEP = str(Path(sys.executable).parent / "kdep-cache")
SOLO_THREADS = str(len(os.sched_getaffinity(0)))  # the old default: torch's, one per core
OLD = ["--workers", "2"]
# per configuration: environment and extra train-student arguments
CONFIGS = {"defaults": {"env": {}, "args": []},
           "old": {"env": {"KDEP_THREADS": SOLO_THREADS}, "args": OLD},
           "before": {"env": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "300000",
                              "KDEP_THREADS": SOLO_THREADS}, "args": OLD},
           "passive": {"env": {"OMP_WAIT_POLICY": "PASSIVE", "KDEP_THREADS": SOLO_THREADS},
                       "args": OLD},
           "threads1": {"env": {"OMP_WAIT_POLICY": "PASSIVE", "KDEP_THREADS": "1"},
                        "args": OLD},
           "spin10k": {"env": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000",
                               "KDEP_THREADS": SOLO_THREADS}, "args": OLD},
           "spin100k": {"env": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "100000",
                                "KDEP_THREADS": SOLO_THREADS}, "args": OLD},
           "spin1k": {"env": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000",
                              "KDEP_THREADS": SOLO_THREADS}, "args": OLD}}


def prepare(scratch: Path, n_images: int, size: int) -> Path:
    import torch
    import torchvision
    data = ROOT / "data" / "cifar10-mini" / "train"
    imgs = scratch / "images"
    for rel in pick_files(data, n_images):
        (imgs / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(data / rel, imgs / rel)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), scratch / "t.pth")
    run = lambda *a: subprocess.run([KDEP, "-q", *map(str, a)], check=True)  # noqa: E731
    run("extract", "--data", imgs, "--teacher", "resnet18", "--teacher-weights",
        scratch / "t.pth", "--views", 2, "--image-size", size, "--out", scratch / "cache")
    run("fit-svd", "--cache", scratch / "cache", "--dim", 512, "--aligner", "identity",
        "--out", scratch / "targets")
    return scratch / "targets"


def command(targets: Path, out: Path, a, config: dict) -> list[str]:
    return [KDEP, "-q", "train-student", "--student", "resnet18", "--targets", str(targets),
            "--out", str(out), "--epochs", str(a.epochs), "--batch-size", str(a.batch_size),
            "--lr", str(a.lr), "--device", "cpu", "--precision", a.precision,
            *config["args"]]


def environment_of(config: dict) -> dict:
    env = {**os.environ, **config["env"]}
    for k in ("KDEP_THREADS", "OMP_NUM_THREADS"):  # only what the configuration sets
        if k not in config["env"]:
            env.pop(k, None)
    return env


def trainings(targets: Path, scratch: Path, n: int, config: dict, a) -> list:
    env = environment_of(config)
    procs, outs = [], []
    for i in range(n):
        out = scratch / f"run-{time.monotonic_ns()}-{i}"
        outs.append(out)
        procs.append(subprocess.Popen(command(targets, out, a, config), env=env))
        if a.stagger and i + 1 < n:
            time.sleep(a.stagger)
    for p in procs:
        assert p.wait() == 0
    rates = []
    for out in outs:
        hist = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
        rates.append(statistics.median(h["images_per_s"] for h in hist[1:]))
        shutil.rmtree(out)
    return rates


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=384)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--size", type=int, default=64, help="view size (teacher and student)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--precision", default="auto", help="train-student --precision")
    ap.add_argument("--max-n", type=int, default=3)
    ap.add_argument("--stagger", type=float, default=0.0,
                    help="seconds between the starts of the N trainings (0: together)")
    ap.add_argument("--configs", default="old,defaults")
    ap.add_argument("--solo-runs", type=int, default=2, help="solo runs per config (median)")
    ap.add_argument("--out", default="benchmarks/results/contention-defaults.json")
    ap.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    add_quiet_args(ap)
    a = ap.parse_args()
    unknown = [c for c in a.configs.split(",") if c not in CONFIGS]
    if unknown or a.max_n < 1 or a.epochs < 2:
        ap.error(f"unknown configs {unknown} (known: {', '.join(CONFIGS)})" if unknown else
                 "--max-n must be >= 1 and --epochs >= 2 (epoch 1 is not measured)")
    if a.dry_run:
        for c in a.configs.split(","):
            env = {k: v for k, v in CONFIGS[c]["env"].items()}
            print(f"{c}: N=1..{a.max_n} x", " ".join(f"{k}={v}" for k, v in env.items()),
                  " ".join(command(Path("TARGETS"), Path("OUT"), a, CONFIGS[c])))
        return
    scratch = Path(tempfile.mkdtemp(prefix="kdep-bench-contention-"))
    try:
        targets = prepare(scratch, a.images, a.size)
        session = Session(a)
        res = {c: {} for c in a.configs.split(",")}
        for n in range(1, a.max_n + 1):  # configs interleaved at each N
            for c in res:
                runs = a.solo_runs if n == 1 else 1
                rates = [trainings(targets, scratch, n, CONFIGS[c], a) for _ in range(runs)]
                res[c][n] = ([statistics.median(r[0] for r in rates)] if n == 1 else rates[0])
                if n == 1:
                    res[c]["solo_runs"] = [r[0] for r in rates]
                print(f"{c} N={n}: {[round(r, 1) for r in res[c][n]]} img/s", flush=True)
        table = {}
        for c, by_n in res.items():
            solo = statistics.mean(by_n[1])
            table[c] = {"solo_img_s": round(solo, 1),
                        "solo_runs_img_s": [round(r, 1) for r in by_n.pop("solo_runs")],
                        **{f"n{n}": {"per_process_img_s": [round(r, 1) for r in v],
                                     "fair_share": round(statistics.mean(v) / (solo / n), 3)}
                           for n, v in by_n.items() if n > 1}}
        base = table.get("before", {}).get("solo_img_s")
        for c in table:
            if base:
                table[c]["solo_vs_before"] = round(table[c]["solo_img_s"] / base, 3)
        out = {"benchmark": "contention", "command": "python benchmarks/bench_contention.py "
               + " ".join(sys.argv[1:]), "images": a.images, "epochs": a.epochs, "size": a.size,
               "batch_size": a.batch_size, "lr": a.lr, "precision": a.precision,
               "stagger_s": a.stagger,
               "configs": CONFIGS, "results": table, **session.record([])}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(table, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
