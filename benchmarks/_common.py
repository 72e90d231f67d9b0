"""Helpers shared by the bench_*.py scripts: CPU-contention accounting (load average,
SIGSTOP/SIGCONT detection, CPU counters), waiting for a quiet machine, environment record."""

from __future__ import annotations

import datetime
import os
import platform
import resource
import signal
import statistics
import subprocess
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent

_CONTINUED = [0]  # SIGCONT count: this process was stopped (SIGSTOP/SIGTSTP) and resumed


def _on_sigcont(signum, frame):
    _CONTINUED[0] += 1


signal.signal(signal.SIGCONT, _on_sigcont)


def _cpu_counters() -> tuple[float, float, float]:
    """(machine busy CPU-seconds from /proc/stat, own CPU-seconds incl. reaped children, wall)."""
    try:
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:9]]  # user nice system idle iowait irq softirq steal
        busy = (sum(v) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError):
        busy = float("nan")
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    own = s.ru_utime + s.ru_stime + c.ru_utime + c.ru_stime + _live_children_cpu()
    return busy, own, time.perf_counter()


def _live_children_cpu() -> float:
    """CPU-seconds of this process's children that are still running (persistent DataLoader
    workers): RUSAGE_CHILDREN counts a child only once it has been reaped."""
    me, ticks = str(os.getpid()), 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:  # fields after "(comm)": state, ppid, ..., utime is the 12th, stime the 13th
            f = stat.read_text().rsplit(")", 1)[1].split()
            if f[1] == me:
                ticks += int(f[11]) + int(f[12])
        except (OSError, ValueError, IndexError):
            pass  # exited meanwhile: counted by RUSAGE_CHILDREN once reaped
    return ticks / os.sysconf("SC_CLK_TCK")


class Probe:
    """Around one measurement: CPU used by OTHER processes (in cores, averaged over the
    measurement; DataLoader workers are this process's children and count as own, running
    or reaped) and whether this process was stopped and continued meanwhile."""

    def __enter__(self):
        self.c0, self.s0 = _cpu_counters(), _CONTINUED[0]
        return self

    def __exit__(self, *exc):
        b1, o1, t1 = _cpu_counters()
        b0, o0, t0 = self.c0
        self.wall = t1 - t0
        self.foreign_cores = max(0.0, ((b1 - b0) - (o1 - o0)) / max(t1 - t0, 1e-9))
        self.stopped = _CONTINUED[0] - self.s0
        return False

    def info(self) -> dict:
        return {"foreign_cores": round(self.foreign_cores, 2), "stopped": self.stopped}


def usable(samples: list[dict]) -> list[dict]:
    """Samples not interrupted by a stop (all of them if every one was)."""
    ok = [s for s in samples if not s["stopped"]]
    return ok or samples


def contention(quiet: dict, samples: list[dict], threshold_cores: float = 0.5) -> dict:
    fc = [s["foreign_cores"] for s in samples]
    med_fc = statistics.median(fc) if fc else 0.0
    reasons = []
    if quiet["contended"]:
        reasons.append(f"1-min load never fell below {quiet['threshold_1min']} before measuring")
    if med_fc >= threshold_cores:
        reasons.append(f"other processes used {med_fc:.2f} cores (median) while measuring")
    stops = sum(s["stopped"] for s in samples)
    if stops:
        reasons.append(f"this process was stopped and resumed {stops} time(s) while measuring "
                       "(those samples are left out of the medians)")
    return {"contended": bool(reasons), "contended_reasons": reasons,
            "foreign_cores_median": round(med_fc, 2), "foreign_cores_max": round(max(fc, default=0), 2),
            "stopped_samples": sum(1 for s in samples if s["stopped"])}


def wait_for_quiet(threshold: float, poll_s: float, max_wait_s: float, enabled: bool) -> dict:
    """Wait until the 1-minute load average is below ``threshold`` (poll, bounded)."""
    t0, first = time.time(), os.getloadavg()
    while enabled and os.getloadavg()[0] >= threshold and time.time() - t0 < max_wait_s:
        print(f"[wait] load {os.getloadavg()[0]:.2f} >= {threshold}; polling every {poll_s:.0f} s",
              flush=True)
        time.sleep(poll_s)
    now = os.getloadavg()
    return {"waited_s": round(time.time() - t0, 1), "load_when_wait_started": list(first),
            "load_when_measuring_started": list(now), "threshold_1min": threshold,
            "wait_enabled": enabled, "contended": bool(now[0] >= threshold)}


def environment() -> dict:
    try:
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, cwd=ROOT, timeout=5).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "kdep_cache"],
                                    capture_output=True, text=True, cwd=ROOT,
                                    timeout=5).stdout.strip())
    except (OSError, subprocess.SubprocessError):
        git, dirty = None, None
    import torchvision
    return {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "torch": torch.__version__, "torchvision": torchvision.__version__,
            "numpy": np.__version__, "python": platform.python_version(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "machine": platform.machine(), "git": git, "library_dirty": dirty,
            "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "OMP_WAIT_POLICY",
                                                   "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS",
                                                   "LD_PRELOAD")}}


def pick_files(data: Path, n: int) -> list[str]:
    """``n`` images spread evenly over the sorted listing (so over all classes)."""
    from kdep_cache.views.images import scan_images
    paths = scan_images(data).paths
    if n > len(paths):
        raise SystemExit(f"--images {n}: only {len(paths)} images under {data}")
    idx = np.linspace(0, len(paths) - 1, n).round().astype(int)
    return [paths[i] for i in idx]


def add_quiet_args(ap) -> None:
    """The options every benchmark shares: wait for a quiet machine (1-min load average)."""
    ap.add_argument("--load-threshold", type=float, default=1.5)
    ap.add_argument("--max-wait", type=float, default=600.0)
    ap.add_argument("--no-wait", action="store_true", help="do not wait for a quiet machine")


class Session:
    """One benchmark run: waits for a quiet machine (``add_quiet_args`` options), then times
    the measuring; ``record(samples)`` is the contention + environment part of the JSON."""

    def __init__(self, args):
        self.quiet = wait_for_quiet(args.load_threshold, 20.0, args.max_wait, not args.no_wait)
        self.t0 = time.perf_counter()

    def record(self, samples: list[dict]) -> dict:
        return {**contention(self.quiet, samples), "quiet_wait": self.quiet,
                "measure_seconds": round(time.perf_counter() - self.t0, 1),
                "environment": environment()}
