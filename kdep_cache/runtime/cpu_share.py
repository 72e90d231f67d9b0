"""CPU training on a shared machine (issue 23.20): default intra-op threads and loader workers
that fit the cores this process may use and are free at start, and a one-line hint when an
epoch runs far below the first one (a neighbour started later).

Why: OpenMP threads that outnumber the free cores wait for each other at every barrier while
one of them is descheduled; measured on 2 cores (ResNet-18, 64 px, bf16), three default
trainings at once each kept 0.12x of its solo speed (a fair share is 0.33x), and one beside a
busy neighbour ran at 4.4 img/s with 2 threads against 33 img/s with one.

The choice (:func:`cpu_plan`) is a pure function of (cores, busy cores); :func:`busy_cores`
reads the busy cores from the kernel's count of runnable threads (``/proc/loadavg``, the
median of a few samples over 0.2 s, this process excluded), not from the 1-minute load
average, which lags by a minute and would still count the previous stage of a pipeline.
Trainings started at the same moment do not see each other's load yet (each is still
loading), so each CPU training also notes its pid in a per-user folder under the temporary
directory, and counts the live trainings there that share one of its cores as busy cores. On a
quiet machine the choice is what it always was (all cores, 2 workers), so results there do
not change; under load a training may run with fewer threads, whose arithmetic is not
bitwise that of more threads (``KDEP_THREADS`` pins them; ``--workers`` pins the workers,
which never change the results).
"""

from __future__ import annotations

import atexit
import logging
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)
# a loader worker's share of a core while the student trains: rendering a stored 64-px view
# (decode, crop, resize) is a small part of a training step; an estimate, to be measured by
# benchmarks/bench_contention.py (it only decides the rounding of the thread count)
WORKER_SHARE = 0.1
SLOW_EPOCH = 0.5  # an epoch below this fraction of the first epoch's img/s gets the hint
FRESH_S = 120.0  # a registry note counts this long: trainings started together see each other


@dataclass(frozen=True)
class CpuPlan:
    cores: int     # cores this process may use (its CPU affinity)
    busy: float    # of those, cores other processes kept busy at start
    threads: int   # intra-op threads
    workers: int   # DataLoader workers
    threads_from: str = ""  # who set the threads when not the load: KDEP_THREADS, a resume ...
    workers_from: str = ""  # "--workers" when the user gave them

    def line(self) -> str:
        t = (f"{self.threads} intra-op thread{'s' * (self.threads != 1)}"
             f"{f' (from {self.threads_from})' if self.threads_from else ''}")
        w = (f"{self.workers} loader worker{'s' * (self.workers != 1)}"
             f"{f' (from {self.workers_from})' if self.workers_from else ''}")
        free = [k for k, given in (("KDEP_THREADS", self.threads_from),
                                   ("--workers", self.workers_from)) if not given]
        if not free:
            return f"cpu: {self.cores} cores -> {t}, {w}"
        pins = f"{free[0]} pins it" if len(free) == 1 else "KDEP_THREADS / --workers pin them"
        return f"cpu: {self.cores} cores, {self.busy:.1f} busy at start -> {t}, {w} ({pins})"


def cpu_plan(cores: int, busy: float, workers: int | None = None,
             threads: int | None = None, max_threads: int | None = None,
             threads_from: str = "") -> CpuPlan:
    """Threads + busy workers within the free cores (at least one thread, at most
    ``max_threads``: torch's own default, one per physical core); ``workers`` / ``threads``
    given by the user are kept as they are (``threads_from`` names who gave the threads, for
    the log line: so that a pinned count does not read as chosen from the load)."""
    cores = max(1, int(cores))
    busy = min(max(0.0, float(busy)), float(cores))
    free = max(1.0, cores - busy)
    w = workers if workers is not None else (2 if free >= 2 else 1)
    cap = min(cores, max_threads or cores)
    t = threads if threads is not None else max(1, min(cap, int(free - w * WORKER_SHARE + 0.5)))
    return CpuPlan(cores, round(busy, 2), t, w,
                   (threads_from or "the caller") if threads is not None else "",
                   "--workers" if workers is not None else "")


def usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def busy_cores(cores: int, samples: int = 5, interval: float = 0.05,
               path: str = "/proc/loadavg") -> float:
    """Cores of this process's share that other threads keep busy now: the median over
    ``samples`` readings of the runnable threads (``/proc/loadavg``, 4th field, less the
    reader), scaled from the whole machine to this process's ``cores``. 0 where unreadable."""
    counts = []
    for i in range(samples):
        try:
            with open(path) as f:
                counts.append(max(0, int(f.read().split()[3].split("/")[0]) - 1))
        except (OSError, ValueError, IndexError):
            return 0.0
        if i + 1 < samples:
            time.sleep(interval)
    total = max(os.cpu_count() or cores, cores)
    return statistics.median(counts) * cores / total


_TORCH_DEFAULT_THREADS: int | None = None  # torch's own default, before a plan changes it


def registry() -> Path:
    """Where this user's CPU trainings note their pids (one empty file each)."""
    return Path(tempfile.gettempdir()) / f"kdep-cache-trainings-{os.getuid()}"


def register(folder: Path | None = None) -> None:
    """Note this process as a CPU training until it exits (trainings started at the same
    moment see each other here before any of them loads the cores)."""
    folder = folder or registry()
    try:
        folder.mkdir(mode=0o700, exist_ok=True)
        me = folder / str(os.getpid())
        me.touch()
        atexit.register(me.unlink, missing_ok=True)
    except OSError:
        pass  # no registry: the load samples alone decide


def other_trainings(folder: Path | None = None, fresh_s: float | None = None) -> int:
    """CPU trainings noted in the registry in the last ``fresh_s`` seconds by live processes
    other than this one that share a core with it (notes of dead processes are removed).
    Older notes are not counted: a training that runs on loads the cores, which the load
    samples see, and a long-lived process (a notebook) that trained once is no training."""
    folder, n = folder or registry(), 0
    fresh_s = FRESH_S if fresh_s is None else fresh_s
    try:
        mine = os.sched_getaffinity(0)
        notes = list(folder.iterdir())
    except (AttributeError, OSError):
        return 0
    for note in notes:
        try:
            pid = int(note.name)
            if (pid != os.getpid() and os.sched_getaffinity(pid) & mine
                    and time.time() - note.stat().st_mtime < fresh_s):
                n += 1
        except ValueError:
            continue
        except (ProcessLookupError, PermissionError):
            note.unlink(missing_ok=True)
        except OSError:
            continue
    return n


def apply_cpu_defaults(device, workers: int | None, distributed: bool,
                       history: list[dict] | None = None) -> int | None:
    """On the CPU, outside torchrun and unless the user set the threads (``KDEP_THREADS``,
    ``OMP_NUM_THREADS``): set the intra-op threads of :func:`cpu_plan`, or those of the run
    being resumed (``history``: its epochs' records, see :func:`after_epoch`), so that a
    resumed run computes as the uninterrupted one; return the loader workers to use
    (``workers`` if given); logs the choice in one line. Elsewhere: ``workers``."""
    if getattr(device, "type", device) != "cpu" or distributed:
        return workers
    import torch
    global _TORCH_DEFAULT_THREADS
    if _TORCH_DEFAULT_THREADS is None:
        _TORCH_DEFAULT_THREADS = torch.get_num_threads()
    pinned = [f"{k}={os.environ[k]}" for k in ("KDEP_THREADS", "OMP_NUM_THREADS")
              if os.environ.get(k)]
    threads = torch.get_num_threads() if pinned else None
    source = pinned[0] if pinned else ""
    if threads is None and history and isinstance(history[-1].get("threads"), int):
        threads, source = max(1, history[-1]["threads"]), "the resumed run"
    cores = usable_cores()
    register()
    busy = max(busy_cores(cores), float(other_trainings()))  # after the samples' 0.2 s
    plan = cpu_plan(cores, busy, workers, threads, _TORCH_DEFAULT_THREADS, source)
    if plan.threads != torch.get_num_threads():
        torch.set_num_threads(plan.threads)
    log.info("%s", plan.line())
    return plan.workers


def after_epoch(history: list[dict]) -> None:
    """Called by the training loop once an epoch's record is appended (before it is
    checkpointed): records the intra-op threads it ran with (a resume keeps them) and logs
    :func:`slow_epoch_hint`."""
    import torch
    history[-1]["threads"] = torch.get_num_threads()
    slow_epoch_hint(history)


def slow_epoch_hint(history: list[dict], threshold: float = SLOW_EPOCH) -> str | None:
    """The hint, the first time an epoch's img/s falls below ``threshold`` x the first
    epoch's (None otherwise, and for every later slow epoch); logged as a warning."""
    rates = [h.get("images_per_s") for h in history]
    if len(rates) < 2 or not rates[0] or rates[-1] is None:
        return None
    slow = [r is not None and r < threshold * rates[0] for r in rates[1:]]
    if not slow[-1] or any(slow[:-1]):
        return None
    try:
        load = f" (1-minute load average {os.getloadavg()[0]:.1f})"
    except OSError:
        load = ""
    # already one thread (KDEP_THREADS=1, as recorded by after_epoch): nothing to lower
    fix = ("it already runs one thread; to yield, stop it (Ctrl-C) and rerun it with --resume "
           "later" if history[-1].get("threads") == 1 else
           "to yield, stop this one (Ctrl-C) and rerun it with KDEP_THREADS=1 and --resume")
    msg = (f"epoch {history[-1].get('epoch', len(history))} ran at {rates[-1]:g} img/s, "
           f"{rates[-1] / rates[0]:.2f}x the first epoch's {rates[0]:g}: other processes now "
           f"share this process's {usable_cores()} cores{load}. Trainings run one after "
           f"another finish sooner than side by side; {fix}")
    log.warning("%s", msg)
    return msg
