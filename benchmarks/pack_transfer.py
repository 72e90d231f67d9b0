"""Issue 26.5, the transfer half: does a ``jpeg:SIDE`` pack cost the student anything?

One unlabeled set (ImageNet-size JPEGs built as in bench_pack.py: mate-backgrounds
sub-windows at 500x375), extracted twice with the EfficientNet-Lite0 teacher at the
quickstart's recipe (64 px, K = 4, crop scale 0.25-1): ``--pack original`` and
``--pack jpeg:SIDE``; a ResNet-18 distilled from each (SVD+PTS, 40 epochs, batch 32, lr 0.05
cosine; seeds given), linear-probed on data/cifar10-mini at 64 px. Same seeds for both packs.
Resumable: a stage whose output is complete is skipped.

    .venv/bin/python benchmarks/pack_transfer.py --out benchmarks/results/pack-transfer.json
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_pack import build_photos  # noqa: E402


def kc(*args) -> None:
    exe = Path(sys.executable).with_name("kdep-cache")
    cmd = [str(exe), *map(str, args)]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", default="repro-out/pack-transfer")
    ap.add_argument("--per-photo", type=int, default=64)
    ap.add_argument("--side", type=int, default=256)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    work = Path(a.work)
    photos = work / "photos" / "all"
    if not (work / "photos.done").exists():
        build_photos(photos, a.per_photo)
        (work / "photos.done").write_text("")
    rows, t0 = {}, time.time()
    for pack in ("original", f"jpeg:{a.side}"):
        tag = pack.replace(":", "")
        cache, tgt = work / f"cache-{tag}", work / f"targets-{tag}"
        kc("extract", "--data", work / "photos", "--teacher", "efficientnet-lite0", "--out",
           cache, "--views", 4, "--image-size", 64, "--crop-scale", 0.25, 1, "--pack", pack,
           "--json")
        if not (tgt / "manifest.json").exists():
            kc("fit-svd", "--cache", cache, "--student", "resnet18", "--fit-views", "all",
               "--out", tgt, "--json")
        for seed in a.seeds.split(","):
            run, res = work / f"r18-{tag}-s{seed}", work / f"lin-{tag}-s{seed}"
            if not (run / "student.json").exists():
                kc("train-student", "--targets", tgt, "--student", "resnet18", "--out", run,
                   "--epochs", a.epochs, "--batch-size", 32, "--lr", 0.05, "--schedule",
                   "cosine", "--image-size", 64, "--seed", seed,
                   *(["--resume"] if (run / "checkpoint.pt").exists() else []), "--json")
            if not (res / "results.json").exists():
                kc("transfer", "--student", run, "--data", ROOT / "data" / "cifar10-mini",
                   "--mode", "linear", "--image-size", 64, "--out", res, "--json")
            r = json.loads((res / "results.json").read_text())
            rows.setdefault(pack, {})[seed] = r["summary"][r["primary"]]["mean"]
        m = json.loads((cache / "manifest.json").read_text())
        rows[pack]["pack_bytes_per_image"] = m["pack"]["bytes_per_image"]
    out = {"command": " ".join(["benchmarks/pack_transfer.py", *sys.argv[1:]]),
           "images": len(os.listdir(photos)), "linear_top1_cifar10_mini_64px": rows,
           "seconds": round(time.time() - t0)}
    print(json.dumps(out, indent=1))
    if a.out:
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")


if __name__ == "__main__":
    main()
