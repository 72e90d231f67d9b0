"""N student trainings at once on this machine: does each keep its fair share (1/N of solo)?

People run several students side by side ("pre-train once, distill to all"). Each training
runs the real CLI (`kdep-cache train-student`, ResNet-18, 32 px, batch 32, 2 DataLoader
workers) on the same small cache; steady-state img/s is the median over epochs 2.. of each
run's own metrics.jsonl. For N = 1, 2, 3 processes started together, per configuration:

- ``before``: OpenMP's default wait policy (idle threads spin before sleeping);
- ``passive``: OMP_WAIT_POLICY=PASSIVE (idle threads sleep at once);
- ``threads1``: passive + one intra-op thread per training (KDEP_THREADS=1);
- ``spin1k`` / ``spin10k`` / ``spin100k``: the default policy with a shorter spin before sleeping
  (GOMP_SPINCOUNT 1,000 / 10,000 / 100,000; libgomp's default is 300,000).

fair_share = (img/s of one of N) / (solo img/s / N); goal >= 0.8 for N = 2, 3, with solo
speed within 5 % of ``before``. ``spin1k`` is what the CLI sets now (kdep_cache/cli.py)
unless the user sets GOMP_SPINCOUNT or OMP_WAIT_POLICY. ``before`` clears both.

    .venv/bin/python benchmarks/bench_contention.py --out benchmarks/results/contention.json
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
CONFIGS = {"before": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "300000"}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"},
           "threads1": {"OMP_WAIT_POLICY": "PASSIVE", "KDEP_THREADS": "1"},
           "spin10k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "10000"},
           "spin100k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "100000"},
           "spin1k": {"OMP_WAIT_POLICY": "", "GOMP_SPINCOUNT": "1000"}}


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


def trainings(targets: Path, scratch: Path, n: int, env_extra: dict, epochs: int) -> list:
    env = {**os.environ, **env_extra}
    env.pop("KDEP_THREADS", None) if "KDEP_THREADS" not in env_extra else None
    procs, outs = [], []
    for i in range(n):
        out = scratch / f"run-{time.monotonic_ns()}-{i}"
        outs.append(out)
        procs.append(subprocess.Popen(
            [KDEP, "-q", "train-student", "--student", "resnet18", "--targets", targets,
             "--out", out, "--epochs", str(epochs), "--batch-size", "32", "--lr", "0.01",
             "--workers", "2", "--device", "cpu", "--precision", "fp32"], env=env))
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
    ap.add_argument("--size", type=int, default=32, help="view size (teacher and student)")
    ap.add_argument("--max-n", type=int, default=3)
    ap.add_argument("--configs", default="before,passive,spin10k,spin100k,threads1")
    ap.add_argument("--solo-runs", type=int, default=2, help="solo runs per config (median)")
    ap.add_argument("--out", default="benchmarks/results/contention.json")
    add_quiet_args(ap)
    a = ap.parse_args()
    scratch = Path(tempfile.mkdtemp(prefix="kdep-bench-contention-"))
    try:
        targets = prepare(scratch, a.images, a.size)
        session = Session(a)
        res = {c: {} for c in a.configs.split(",")}
        for n in range(1, a.max_n + 1):  # configs interleaved at each N
            for c in res:
                runs = a.solo_runs if n == 1 else 1
                rates = [trainings(targets, scratch, n, CONFIGS[c], a.epochs) for _ in range(runs)]
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
               "configs": CONFIGS, "results": table, **session.record([])}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
        print(json.dumps(table, indent=1))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
