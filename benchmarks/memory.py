"""Peak RSS of ``extract``, ``fit-svd`` and ``train-student`` (1 epoch) at N and 10N images.

Every stage runs as a fresh ``kdep-cache`` process on synthetic data (random 32x32 PNGs, a
random ResNet-18 teacher saved to a file, image size 32, workers 0, shard size 256); its peak
RSS is the ``ru_maxrss`` that ``os.wait4`` reports for exactly that process. The baseline is
a process that only imports what the stages import (torch, torchvision, h5py, kdep_cache).
Writes ``benchmarks/results/memory.json``::

    nice -n 10 python benchmarks/memory.py [--n 200] [--scale 10] [--views 4]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
CLI = "import sys; from kdep_cache.cli import main; main(prog_name='kdep-cache')"
IMPORTS = ("import torch, torchvision, h5py, kdep_cache.extract.run, kdep_cache.fit.run, "
           "kdep_cache.train.student")


def make_images(d: Path, n: int, seed: int = 0) -> None:
    from PIL import Image
    rng = np.random.default_rng(seed)
    for c in range(2):  # two class folders, like an ImageFolder
        (d / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        a = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(a).save(d / f"c{i % 2}" / f"{i:06d}.png")


def make_teacher(path: Path) -> None:
    import torch
    import torchvision
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), path)


def measure(argv: list[str], log: Path) -> dict:
    """Run ``argv`` as a child; return its peak RSS (MiB), wall time and exit code."""
    t0 = time.perf_counter()
    with open(log, "a") as f:
        f.write(f"\n$ {' '.join(argv)}\n")
        f.flush()
        proc = subprocess.Popen(argv, stdout=f, stderr=f)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    rss_kib = usage.ru_maxrss  # Linux: KiB
    return {"peak_rss_mib": round(rss_kib / 1024, 1), "seconds": round(time.perf_counter() - t0, 1),
            "rc": proc.returncode}


def stages(work: Path, teacher: Path, views: int) -> dict[str, list[str]]:
    py = [sys.executable, "-c", CLI]
    return {
        "extract": py + ["extract", "--data", str(work / "images"), "--teacher", "resnet18",
                         "--teacher-weights", str(teacher), "--out", str(work / "cache"),
                         "--views", str(views), "--image-size", "32", "--batch-size", "64",
                         "--workers", "0", "--shard-size", "256", "--device", "cpu"],
        "fit-svd": py + ["fit-svd", "--cache", str(work / "cache"), "--out",
                         str(work / "targets"), "--student", "resnet18", "--fit-views", "all"],
        "train-student": py + ["train-student", "--student", "resnet18", "--targets",
                               str(work / "targets"), "--out", str(work / "run"), "--epochs", "1",
                               "--batch-size", "64", "--workers", "0", "--device", "cpu",
                               "--precision", "fp32"],
    }


def machine() -> dict:
    import torch
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text()
                .splitlines() if ln.startswith("model name")), platform.processor())
    return {"nproc": os.cpu_count(), "ram_gib": round(int(mem) / 2**20, 1), "cpu": cpu,
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="N (the second run uses scale x N)")
    ap.add_argument("--scale", type=int, default=10)
    ap.add_argument("--views", type=int, default=4, help="K views per image")
    ap.add_argument("--out", default=str(HERE / "results" / "memory.json"))
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="kdep-mem-"))
    log = root / "stages.log"  # the stages' own output (printed if one fails)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    try:
        teacher = root / "r18.pth"
        make_teacher(teacher)
        result = {"baseline_import": measure([sys.executable, "-c", IMPORTS], log), "runs": {}}
        for n in (args.n, args.n * args.scale):
            work = root / f"n{n}"
            make_images(work / "images", n)
            runs = {}
            for name, argv in stages(work, teacher, args.views).items():
                runs[name] = measure(argv, log)
                runs[name]["command"] = " ".join(argv[3:])
                if runs[name]["rc"] != 0:
                    raise SystemExit(f"{name} failed at N={n}:\n{log.read_text()[-3000:]}")
            runs["bytes"] = {d: sum(f.stat().st_size for f in (work / d).rglob("*"))
                             for d in ("cache", "targets", "run")}
            result["runs"][str(n)] = runs
        base = result["baseline_import"]["peak_rss_mib"]
        lo, hi = (result["runs"][str(n)] for n in (args.n, args.n * args.scale))
        result["ratio_10n_over_n"] = {s: round(hi[s]["peak_rss_mib"] / lo[s]["peak_rss_mib"], 3)
                                      for s in ("extract", "fit-svd", "train-student")}
        result["growth_mib_above_n"] = {s: round(hi[s]["peak_rss_mib"] - lo[s]["peak_rss_mib"], 1)
                                        for s in ("extract", "fit-svd", "train-student")}
        result.update(n=args.n, scale=args.scale, views=args.views, image_size=32,
                      shard_size=256, workers=0, baseline_mib=base,
                      command=" ".join([sys.executable] + sys.argv),
                      date=datetime.datetime.now(datetime.timezone.utc).isoformat(
                          timespec="seconds"), machine=machine())
        Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
        print(json.dumps({k: result[k] for k in ("ratio_10n_over_n", "growth_mib_above_n",
                                                 "baseline_mib")}, indent=1))
        for n, runs in result["runs"].items():
            print(n, {s: runs[s]["peak_rss_mib"] for s in ("extract", "fit-svd", "train-student")})
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
