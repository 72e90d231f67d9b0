"""Share of a DistributedDataParallel training step spent in the gradient all-reduce
(gloo, 2 CPU ranks), for ResNet-18 and MobileNetV2; and the two costs fit-svd's choice
under torchrun rests on (streaming the moments on one rank vs all-reducing them).

On a 2-core CPU a speed-up from 2 ranks means nothing; what carries over is the share of a
step the all-reduce takes. Per model, interleaved rounds of ``--steps`` steps each:

- ``ddp``: forward + backward with DDP's bucketed gradient all-reduce (+ SGD step);
- ``local``: the same inside ``ddp.no_sync()`` (no all-reduce);
- ``allreduce``: one all-reduce of a tensor the size of all gradients, alone.

share = (ddp - local) / ddp (the part the overlap did not hide), and allreduce / ddp.

    .venv/bin/torchrun --standalone --nproc-per-node 2 benchmarks/bench_ddp.py \\
        --out benchmarks/results/ddp.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torchvision
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import Probe, Session, add_quiet_args  # noqa: E402


def _time(fn, steps: int) -> float:
    dist.barrier()
    t0 = time.perf_counter()
    for _ in range(steps):
        fn()
    dist.barrier()
    return (time.perf_counter() - t0) / steps


def bench_model(name: str, a) -> dict:
    from kdep_cache.models import FeatureNet
    torch.manual_seed(0)
    net = FeatureNet(torchvision.models.get_model(name)).to(memory_format=torch.channels_last)
    ddp = torch.nn.parallel.DistributedDataParallel(net, find_unused_parameters=True)
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    x = torch.randn(a.batch // 2, 3, a.size, a.size).contiguous(memory_format=torch.channels_last)
    t = torch.randn(a.batch // 2, net.dim)

    def step():
        loss = ((ddp(x)["pre"] - t) ** 2).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    def local():
        with ddp.no_sync():
            step()

    n = sum(p.numel() for p in net.parameters() if p.requires_grad)
    flat = torch.zeros(n)
    ar = lambda: dist.all_reduce(flat)  # noqa: E731
    step(), local(), ar()  # warm-up
    res = {"ddp": [], "local": [], "allreduce": [], "probes": []}
    for r in range(a.rounds):
        for kind, fn in (("ddp", step), ("local", local), ("allreduce", ar))[::1 if r % 2 == 0
                                                                            else -1]:
            with Probe() as p:
                res[kind].append(_time(fn, a.steps if kind != "allreduce" else 5))
            res["probes"].append({"kind": kind, **p.info()})
    med = {k: statistics.median(res[k]) for k in ("ddp", "local", "allreduce")}
    return {"model": name, "params": n, "gradient_mb": round(n * 4 / 2**20, 1),
            "batch_per_rank": a.batch // 2, "image_size": a.size,
            "step_ddp_s": round(med["ddp"], 4), "step_local_s": round(med["local"], 4),
            "allreduce_alone_s": round(med["allreduce"], 4),
            "allreduce_share_of_step": round((med["ddp"] - med["local"]) / med["ddp"], 3),
            "allreduce_alone_over_step": round(med["allreduce"] / med["ddp"], 3),
            "samples": {k: [round(v, 4) for v in res[k]] for k in ("ddp", "local", "allreduce")},
            "probes": res["probes"]}


def bench_fit(a) -> dict:
    """fit-svd's costs at D=2048: one rank streaming ``rows`` float64 rows into the moments,
    vs one all-reduce of those moments (D x D float64) between the ranks."""
    from kdep_cache.fit.moments import Moments
    d, rows = 2048, a.fit_rows
    x = np.random.default_rng(0).standard_normal((rows, d)).astype(np.float16)
    with threadpool_limits(1, user_api="blas"):
        t0 = time.perf_counter()
        m = Moments.empty(d)
        for lo in range(0, rows, 1024):
            m = m.update(x[lo:lo + 1024].astype(np.float64))
        acc = time.perf_counter() - t0
        t0 = time.perf_counter()
        np.linalg.eigh(m.cov)
        eig = time.perf_counter() - t0
    cov = torch.from_numpy(m.cov.copy())
    dist.all_reduce(cov)  # warm-up
    t_ar = _time(lambda: dist.all_reduce(cov), 3)
    return {"dim": d, "rows": rows, "accumulate_s": round(acc, 3),
            "accumulate_rows_per_s": round(rows / acc), "eigh_1thread_s": round(eig, 3),
            "allreduce_moments_s": round(t_ar, 4),
            "rows_1_28M_one_rank_est_s": round(1.28e6 / (rows / acc) + eig, 1)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--batch", type=int, default=32, help="global batch (2 ranks)")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--fit-rows", type=int, default=16000)
    ap.add_argument("--out", default="benchmarks/results/ddp.json")
    add_quiet_args(ap)
    a = ap.parse_args()
    dist.init_process_group("gloo")
    torch.set_num_threads(max(1, len(os.sched_getaffinity(0)) // dist.get_world_size()))
    session = Session(a) if dist.get_rank() == 0 else None
    dist.barrier()
    models = [bench_model(m, a) for m in a.models.split(",")]
    fit = bench_fit(a)
    if dist.get_rank() == 0:
        out = {"benchmark": "ddp", "command": "torchrun --standalone --nproc-per-node 2 "
               "benchmarks/bench_ddp.py " + " ".join(sys.argv[1:]),
               "world_size": dist.get_world_size(), "backend": "gloo",
               "threads_per_rank": torch.get_num_threads(), "models": models, "fit_svd": fit,
               **session.record([p for m in models for p in m["probes"]])}
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
        for m in models:
            print(f"{m['model']}: step {m['step_ddp_s']} s with all-reduce, {m['step_local_s']} s "
                  f"without -> share {m['allreduce_share_of_step']}; all-reduce alone "
                  f"{m['allreduce_alone_s']} s ({m['gradient_mb']} MiB)")
        print(f"fit-svd: {fit}")
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
