"""Per-epoch cost of train-student's input pipeline: one persistent DataLoader for the whole run
(``Feed``, workers started once) versus a new DataLoader every epoch (the previous design).

Set-up: the ``data/cifar10-mini`` train images, a random-init ResNet-18 teacher saved to a
file, ``extract`` with K views at the teacher size and ``fit-svd`` to 512. Then ``--rounds``
interleaved rounds; each times ``--epochs`` epochs of batches (decode + replayed view +
targets; no model, so the pipeline alone is measured) in both modes. The first epoch of each
mode is reported apart (it starts the workers in both). Writes
``benchmarks/results/loader.json``::

    python benchmarks/bench_loader.py [--epochs 6] [--rounds 3] [--size 32] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
from pathlib import Path

import torch
import torchvision
from _common import Probe, Session, add_quiet_args, usable

ROOT = Path(__file__).resolve().parent.parent


def epochs_seconds(feed_for_epoch, epochs: int) -> list[dict]:
    out = []
    for e in range(epochs):
        with Probe() as p:
            n = sum(len(b.x) for b in feed_for_epoch(e))
        assert n > 0
        out.append({"epoch": e, "seconds": round(p.wall, 4), **p.info()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=6)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=32)
    add_quiet_args(ap)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "loader.json"))
    a = ap.parse_args()
    from kdep_cache.extract.run import ExtractConfig, extract
    from kdep_cache.fit.run import FitConfig, fit_svd
    from kdep_cache.train.feed import Feed
    from kdep_cache.train.sources import open_source
    scratch = Path(tempfile.mkdtemp(prefix="kdep-bench-loader-"))
    try:
        torch.manual_seed(0)
        teacher = scratch / "r18.pth"
        torch.save(torchvision.models.resnet18().state_dict(), teacher)
        extract(ExtractConfig(data=str(ROOT / "data" / "cifar10-mini" / "train"),
                              teacher="resnet18", teacher_weights=str(teacher),
                              out=str(scratch / "c"), views=a.views, image_size=a.size,
                              workers=a.workers, device="cpu"))
        fit_svd(FitConfig(cache=str(scratch / "c"), out=str(scratch / "t"), dim=512))
        src = open_source(str(scratch / "t"), None, None, "targets", a.size, 0)
        args = (src, "targets", a.batch_size, a.workers, 0, False)
        session = Session(args=a)
        res = {"persistent": [], "per_epoch": []}
        for r in range(a.rounds):
            for mode in (("persistent", "per_epoch") if r % 2 == 0 else ("per_epoch",
                                                                           "persistent")):
                if mode == "persistent":
                    feed = Feed(*args)
                    secs = epochs_seconds(feed.epoch, a.epochs)
                    del feed
                else:
                    secs = epochs_seconds(lambda e: Feed(*args).epoch(e), a.epochs)
                res[mode].append(secs)
        summary = {m: {"first_epoch_s": round(statistics.median(
                           x["seconds"] for x in usable([r[0] for r in v])), 3),
                       "later_epoch_s": round(statistics.median(
                           x["seconds"] for x in usable([x for r in v for x in r[1:]])), 3)}
                   for m, v in res.items()}
        p, q = summary["persistent"]["later_epoch_s"], summary["per_epoch"]["later_epoch_s"]
        doc = {"command": "python benchmarks/bench_loader.py " + " ".join(
                   f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items()
            if k in ("epochs", "rounds", "size", "views", "workers", "batch_size")),
               "images_per_epoch": len(src.ids), "summary": summary,
               "saved_per_epoch_s": round(q - p, 3), "per_epoch_over_persistent": round(q / p, 3),
               "samples": res, **session.record([x for v in res.values() for r in v for x in r])}
        Path(a.out).write_text(json.dumps(doc, indent=1))
        print(json.dumps({"summary": summary, "saved_per_epoch_s": doc["saved_per_epoch_s"]}))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
