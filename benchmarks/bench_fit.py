"""The fit-svd pass versus one plain read of the raw cache, and one 2048x2048 eigh, one run.

A synthetic raw cache (``--images`` x ``--views`` x ``--dim`` float16, shards of
``--shard-size`` images; features = low-rank signal + noise, so the spectrum decays like a
real teacher's) is written once to ``--scratch``. Then, for ``--rounds`` interleaved rounds:

* ``fit``: the whole :func:`kdep_cache.fit.run.fit_svd` (streaming moments over the fitted
  views, eigendecomposition, projection file, aligned targets for every view, manifest)
  into a fresh output directory, timed as the wall time of the call;
* ``read``: open the cache with :class:`Store` and read every shard and every view once,
  touching every row (a float32 column sum), i.e. the I/O floor of any pass over the cache;
* ``eigh``: one ``numpy.linalg.eigh`` of a 2048x2048 covariance (the fitted one).

After the rounds, one instrumented pass times the parts of the fit separately
(``accumulate``, ``fit_projection``, the aligned-std diagnostic, target writing) so a slow
part can be named. Writes ``benchmarks/results/fit.json``::

    python benchmarks/bench_fit.py [--images 4000] [--views 4] [--dim 2048] [--rounds 3]
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
from _common import Probe, Session, add_quiet_args, usable

ROOT = Path(__file__).resolve().parent.parent


def make_cache(out: Path, images: int, views: int, dim: int, shard_size: int, rank: int,
               seed: int = 0) -> Path:
    """A complete raw cache of synthetic float16 features (the library's own writers)."""
    from kdep_cache.cache.manifest import finalize_store, load_or_init_config, record_shard
    from kdep_cache.cache.schema import MANIFEST, RAW, shard_name
    from kdep_cache.cache.store import write_shard
    from kdep_cache.views.augment import N_PARAMS, PARAM_FIELDS
    key = {"images": images, "views": views, "dim": dim, "shard_size": shard_size,
           "rank": rank, "seed": seed}
    stamp = out / "bench-key.json"
    if (out / MANIFEST).is_file() and stamp.is_file() and json.loads(stamp.read_text()) == key:
        return out
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    basis = rng.standard_normal((rank, dim)).astype(np.float32)
    basis *= (1.0 / np.sqrt(1.0 + np.arange(rank, dtype=np.float32)))[:, None]  # decaying spectrum
    offset = rng.uniform(0.0, 1.0, dim).astype(np.float32)
    settings = {"format": RAW, "teacher": {"name": "synthetic", "dim": dim, "norm": "imagenet",
                                           "num_classes": None},
                "augment": {}, "seed": 0, "views": views, "image_size": 112, "dtype": "float16",
                "n_images": images, "images": "synthetic", "param_fields": list(PARAM_FIELDS)}
    paths = [f"img{i:06d}.jpg" for i in range(images)]
    load_or_init_config(out, settings, {"root": str(out), "paths": paths,
                                        "labels": [-1] * images, "classes": []})
    for s, lo in enumerate(range(0, images, shard_size)):
        hi = min(images, lo + shard_size)
        z = rng.standard_normal((views * (hi - lo), rank)).astype(np.float32)
        f = z @ basis + 0.3 * rng.standard_normal((views * (hi - lo), dim)).astype(np.float32)
        f += offset
        arrays = {"features": f.reshape(views, hi - lo, dim).astype(np.float16),
                  "params": np.zeros((views, hi - lo, N_PARAMS)),
                  "valid": np.ones(hi - lo, np.uint8)}
        entry = write_shard(out / shard_name(s), {**settings, "start": lo, "stop": hi}, arrays)
        record_shard(out, s, entry, lo, hi)
    finalize_store(out, settings, -(-images // shard_size), ["features", "params", "valid"],
                   extra={"dim": dim, "dtype": "float16"})
    stamp.write_text(json.dumps(key))
    return out


def read_once(cache: Path) -> tuple[float, int]:
    """Read every shard and view once, touching every row; return (seconds, rows)."""
    from kdep_cache.cache.schema import RAW
    from kdep_cache.cache.store import Store
    t0 = time.perf_counter()
    st = Store(cache, RAW)
    rows, acc = 0, None
    for lo, hi, arr in st.iter_shards("features"):
        for v in range(st.views):
            s = np.asarray(arr[v], dtype=np.float32).sum(axis=0)
            acc = s if acc is None else acc + s
            rows += hi - lo
    st.close()
    return time.perf_counter() - t0, rows


def run_fit(cache: Path, out: Path, args) -> tuple[float, dict]:
    from kdep_cache.fit.run import FitConfig, fit_svd
    shutil.rmtree(out, ignore_errors=True)
    t0 = time.perf_counter()
    summary = fit_svd(FitConfig(cache=str(cache), out=str(out), dim=args.target_dim,
                                fit_views=args.fit_views))
    return time.perf_counter() - t0, summary


def breakdown(cache: Path, out: Path, args) -> dict:
    """Time the parts of fit_svd one by one (same calls the library makes, in order)."""
    from kdep_cache.cache.schema import RAW
    from kdep_cache.cache.store import Store
    from kdep_cache.fit.align import AlignSpec, fit_projection
    from kdep_cache.fit.run import _write_targets, accumulate, parse_views
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    st = Store(cache, RAW)
    views = parse_views(args.fit_views, st.views)
    t = {}
    t0 = time.perf_counter()
    m = accumulate(st, views)
    t["accumulate"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    proj = fit_projection(AlignSpec(args.target_dim), m)
    t["fit_projection (eigh + sort + sign fix)"] = time.perf_counter() - t0
    cov = m.cov
    t0 = time.perf_counter()
    proj.aligned_std(cov)
    t["aligned_std (diag of W^T C W, as the library computes it)"] = time.perf_counter() - t0
    if args.legacy_einsum:
        t0 = time.perf_counter()
        np.einsum("ij,ik,kj->j", proj.weight, cov, proj.weight)
        t["(reference) 3-operand np.einsum of the same diag, used twice before bb0a82a"] = \
            time.perf_counter() - t0
    t0 = time.perf_counter()
    _write_targets(st, proj, out, {"format": "bench"}, views, "float16")
    t["_write_targets (all views: read, project float64, pts, write shards)"] = \
        time.perf_counter() - t0
    st.close()
    shutil.rmtree(out, ignore_errors=True)
    return {k: round(v, 3) for k, v in t.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=4000)
    ap.add_argument("--views", type=int, default=4)
    ap.add_argument("--dim", type=int, default=2048, help="teacher feature width")
    ap.add_argument("--target-dim", type=int, default=512, help="student width (ResNet-18: 512)")
    ap.add_argument("--shard-size", type=int, default=1024, help="images per shard (extract default)")
    ap.add_argument("--rank", type=int, default=256, help="rank of the synthetic signal")
    ap.add_argument("--fit-views", default="0", help="fit_svd --fit-views (paper: view 0)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--scratch", default="/tmp/kdep-bench-fit")
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fit.json"))
    ap.add_argument("--no-breakdown", action="store_true")
    ap.add_argument("--legacy-einsum", action="store_true",
                    help="also time the 3-operand einsum fit-svd used before commit bb0a82a")
    add_quiet_args(ap)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    cache = make_cache(scratch / "cache", args.images, args.views, args.dim, args.shard_size,
                       args.rank)
    build_s = time.perf_counter() - t0
    cache_bytes = sum(p.stat().st_size for p in cache.glob("shard-*.h5"))
    read_once(cache)  # warm the page cache: both fit and read then run from memory

    from kdep_cache.cache.schema import RAW
    from kdep_cache.cache.store import Store
    from kdep_cache.fit.run import accumulate, parse_views
    st = Store(cache, RAW)  # the covariance fit_svd decomposes, for the standalone eigh
    cov = accumulate(st, parse_views(args.fit_views, st.views)).cov
    st.close()

    session = Session(args)
    load_before = list(os.getloadavg())
    samples, summary, rows = {"fit_svd": [], "read": [], "eigh": []}, None, 0
    for r in range(args.rounds):
        with Probe() as p:
            secs, summary = run_fit(cache, scratch / "targets", args)
        samples["fit_svd"].append({"seconds": secs, **p.info()})
        with Probe() as p:
            secs, rows = read_once(cache)
        samples["read"].append({"seconds": secs, **p.info()})
        with Probe() as p:
            t0 = time.perf_counter()
            np.linalg.eigh(cov)
            secs = time.perf_counter() - t0
        samples["eigh"].append({"seconds": secs, **p.info()})
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{k} {v[-1]['seconds']:.3f} s (others {v[-1]['foreign_cores']:.2f} cores)"
            for k, v in samples.items()), flush=True)
    with Probe() as p:
        parts = None if args.no_breakdown else breakdown(cache, scratch / "targets-breakdown",
                                                         args)
    parts_info = p.info()
    load_after = list(os.getloadavg())
    shutil.rmtree(scratch / "targets", ignore_errors=True)

    fit_m, read_m, eigh_m = (statistics.median(x["seconds"] for x in usable(samples[k]))
                             for k in ("fit_svd", "read", "eigh"))
    all_samples = [x for v in samples.values() for x in v]
    doc = {"benchmark": "fit-svd pass vs one read of the raw cache, plus one eigh",
           "command": " ".join(sys.argv),
           "settings": {"images": args.images, "views": args.views, "dim": args.dim,
                        "dtype": "float16", "target_dim": args.target_dim,
                        "fit_views": args.fit_views, "shard_size": args.shard_size,
                        "shards": -(-args.images // args.shard_size),
                        "cache_bytes": cache_bytes, "synthetic_rank": args.rank,
                        "rounds": args.rounds, "threads": args.threads,
                        "aligner": "svd", "transform": "pts", "page_cache": "warm",
                        "blas_env": {k: os.environ.get(k) for k in
                                     ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS",
                                      "MKL_NUM_THREADS")}},
           "results": {
               "fit_svd_seconds": round(fit_m, 3),
               "read_raw_cache_once_seconds": round(read_m, 4),
               "read_rows_per_s": round(rows / read_m),
               "read_mib_per_s": round(cache_bytes / read_m / 2 ** 20, 1),
               "eigh_2048_seconds": round(eigh_m, 3),
               "ratio_fit_over_read": round(fit_m / read_m, 1),
               "ratio_fit_over_eigh": round(fit_m / eigh_m, 2),
               "fit_summary_fit_seconds": summary["fit_seconds"],
               "fitted_samples": summary["fitted_samples"],
               "explained_variance": summary["explained_variance"],
               "samples": {k: [{kk: round(vv, 4) if isinstance(vv, float) else vv
                                for kk, vv in x.items()} for x in v]
                           for k, v in samples.items()}},
           "breakdown_one_pass_seconds": parts, "breakdown_probe": parts_info,
           "cache_build_seconds": round(build_s, 1),
           "loadavg_before": load_before, "loadavg_after": load_after,
           "loadavg_note": "loadavg_after includes this benchmark's own process; "
                           "foreign_cores = CPU used by other processes during a sample",
           **session.record(all_samples)}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=1) + "\n")
    print(json.dumps(doc["results"], indent=1))
    print(json.dumps(parts, indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
