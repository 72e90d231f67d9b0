"""torch.distributed, as torchrun launches it: ranks from the environment, one device per
rank, and the few collectives the stages use.

Every stage calls :func:`context` once. Without torchrun (no ``WORLD_SIZE`` / ``RANK`` in the
environment) it returns a one-process context and nothing else changes. Under torchrun it
initializes the default process group: NCCL with each rank on ``cuda:LOCAL_RANK`` when the
stage runs on CUDA, gloo on CPU. All ranks must join within ``KDEP_DIST_INIT_TIMEOUT``
seconds (default 300), else one line; collectives time out after ``KDEP_DIST_TIMEOUT`` seconds
(default 1800: fit-svd's rank 0 may work for minutes while the others wait at a barrier);
a rank that dies makes the others fail in the next collective (gloo sees the closed
connection at once) or be stopped by torchrun's agent, and :func:`failure_line` turns that
into one line naming the rank.
"""

from __future__ import annotations

import atexit
import contextlib
import datetime
import os
import re
from dataclasses import dataclass

import torch

from ..checks.environment import env_float, env_int
from ..errors import KdepError

# what gloo / NCCL say when a peer died or stalled
_COMM = re.compile(r"gloo|NCCL|Connection (reset|closed|refused)|Broken pipe|[Tt]imed out")

DEFAULT_TIMEOUT_S = 1800
# joining the group: a rank that never comes is known long before fit-svd's slowest barrier
DEFAULT_INIT_TIMEOUT_S = 300


class DistError(KdepError):
    """A collective failed: another rank died, raised or stalled past the timeout."""

    exit_code = 5


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def enabled(self) -> bool:
        return torch.distributed.is_available() and torch.distributed.is_initialized()

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self, what: str) -> None:
        if self.enabled:
            _guard(torch.distributed.barrier, what, self.rank)

    def all_reduce(self, t: torch.Tensor, what: str) -> torch.Tensor:
        """Sum over ranks, in place (no-op in one process)."""
        if self.enabled:
            _guard(lambda: torch.distributed.all_reduce(t), what, self.rank)
        return t

    def all_gather_object(self, obj, what: str) -> list:
        """Every rank's ``obj``, in rank order (``[obj]`` in one process)."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        _guard(lambda: torch.distributed.all_gather_object(out, obj), what, self.rank)
        return out

    @contextlib.contextmanager
    def implicit(self, what: str):
        """Around code whose collectives torch runs itself (DDP's forward buffer broadcast and
        backward all-reduce, SyncBN): a peer's death there gets the same one line."""
        try:
            yield
        except (RuntimeError, ValueError) as e:
            if not (self.world_size > 1 and _COMM.search(str(e))):
                raise  # a real error of this rank
            raise DistError(failure_line(self.rank, what, e)) from None

    def broadcast_object(self, obj, what: str):
        """Rank 0's ``obj`` on every rank."""
        if not self.enabled:
            return obj
        box = [obj]
        _guard(lambda: torch.distributed.broadcast_object_list(box, src=0), what, self.rank)
        return box[0]


def env_ranks() -> Dist | None:
    """The ranks torchrun (or a scheduler) put in the environment, or None."""
    if "WORLD_SIZE" not in os.environ or "RANK" not in os.environ:
        return None
    world = env_int("WORLD_SIZE", 1, lo=1)  # a one-line InputError on text (#23.9)
    local_world = env_int("LOCAL_WORLD_SIZE", world, lo=1)
    return Dist(env_int("RANK", 0), world, env_int("LOCAL_RANK", 0), local_world)


def context(device: str = "auto") -> Dist:
    """Join the process group torchrun set up (idempotent), or a one-process context."""
    n = threads_per_rank()
    if n is not None and torch.get_num_threads() != n:
        torch.set_num_threads(n)
    d = env_ranks()
    if d is None:
        return Dist()
    if not torch.distributed.is_initialized():
        cuda = device != "cpu" and torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(d.local_rank)
        collective = _seconds("KDEP_DIST_TIMEOUT", DEFAULT_TIMEOUT_S)
        join = min(_seconds("KDEP_DIST_INIT_TIMEOUT", DEFAULT_INIT_TIMEOUT_S), collective)
        set_timeout = _timeout_setter()
        join = join if set_timeout is not None else collective  # else one timeout for both
        atexit.register(close)
        _bind_group_defaults_early()
        if d.world_size > 1:
            stop_on_sigterm(d.rank)
        try:  # the group forms within the (shorter) join timeout, or one line
            torch.distributed.init_process_group(
                "nccl" if cuda else "gloo", timeout=datetime.timedelta(seconds=join),
                **({"device_id": torch.device("cuda", d.local_rank)} if cuda else {}))
        except (RuntimeError, ValueError) as e:
            raise DistError(join_failure_line(d.rank, d.world_size, join, e)) from None
        if collective > join:
            set_timeout(datetime.timedelta(seconds=collective))
    return d


# torch modules whose functions take ``group=group.WORLD`` as a default argument, evaluated at
# import: imported after the group formed, they keep references to it that
# destroy_process_group cannot drop (torch.distributed.nn.functional: 10). fit-svd's rank 0
# imports it so, through torchvision -> torch._dynamo -> fsdp -> _shard, when it writes the
# manifest (cache.schema.producer_info). The group then outlived close(): its gloo worker and
# tcp-loop threads were still running when the process exited (strace: alive at exit_group),
# and that teardown now and then aborted the finished rank ("terminate called without an
# active exception", SIGABRT), so torchrun failed a run whose work was done. Imported before
# the group forms, the defaults are None (the default group at call time). torch's
# fsdp.sharded_grad_scaler and optim.ZeroRedundancyOptimizer bind one reference each the same
# way; kdep-cache imports neither (~0.5 s to import early, so they are not).
_GROUP_DEFAULT_MODULES = ("torch.distributed.nn",)


def _bind_group_defaults_early() -> None:
    import importlib
    for name in _GROUP_DEFAULT_MODULES:
        importlib.import_module(name)


def _timeout_setter():
    """torch's setter of a formed group's timeout (public in recent torch, private before;
    None if this torch has neither)."""
    public = getattr(torch.distributed, "set_timeout", None)
    if public is not None:
        return public
    from torch.distributed import distributed_c10d
    return getattr(distributed_c10d, "_set_pg_timeout", None)


def _seconds(name: str, default: float) -> float:
    """A positive, finite number of seconds from the environment (one line otherwise)."""
    return env_float(name, float(default))


def join_failure_line(rank: int, world: int, seconds: float, e: BaseException) -> str:
    text = " ".join(str(e).split())[:200]
    return (f"rank {rank}: the {world} ranks did not all join within {seconds:g} s "
            f"(KDEP_DIST_INIT_TIMEOUT; {type(e).__name__}: {text}): a rank did not start, "
            "died before joining, or MASTER_ADDR/MASTER_PORT differ; rerun the same command")


def stop_on_sigterm(rank: int) -> None:
    """SIGTERM (torchrun stops every rank when one fails; schedulers stop jobs so) ends this
    rank with the one DistError line, through the same cleanup as any error."""
    import signal
    import threading

    me = os.getpid()

    def stop(signum, frame):
        if os.getpid() != me:  # a forked DataLoader worker: die as before, quietly
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGTERM)
            return
        raise DistError(f"rank {rank}: stopped by SIGTERM (torchrun stops the other ranks when "
                        "one fails: its own report names the rank); rerun the same command "
                        "to resume")

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, stop)


def global_batches(keys, batch_size: int, world: int, drop_short: bool) -> list:
    """``keys`` (one epoch's order) cut into global batches of ``batch_size``; a short last
    batch is dropped when ``drop_short``, and, with several ranks, one that would leave a
    rank fewer than 2 items (BatchNorm cannot train on one)."""
    cut = len(keys) // batch_size * batch_size if drop_short else len(keys)
    out = [keys[i:i + batch_size] for i in range(0, cut, batch_size)]
    return [x for x in out if world == 1 or len(x) >= 2 * world]


def rank_seed(base: int, rank: int) -> int:
    """The seed of rank ``rank`` for draws that must differ between ranks (random crops and
    flips of a rank's own images, dropout): ``base`` on rank 0, so one process and rank 0
    draw as before; another well-mixed seed on every other rank."""
    if rank == 0:
        return int(base)
    import numpy as np
    return int(np.random.SeedSequence([int(base), int(rank)]).generate_state(1, np.uint64)[0]
               >> 1)


def rank_slice(keys, rank: int, world: int) -> list:
    """This rank's slice of one global batch (the ranks together hold all of it)."""
    import numpy as np
    return np.array_split(np.asarray(keys), world)[rank].tolist()


def rank_device(device: torch.device) -> torch.device:
    """Under torchrun each rank has its own GPU, ``cuda:LOCAL_RANK``; CPU ranks share."""
    d = env_ranks()
    if d is not None and device.type == "cuda":
        return torch.device("cuda", d.local_rank)
    return device


def threads_per_rank() -> int | None:
    """Intra-op threads for this process: ``KDEP_THREADS`` if set; under torchrun, the
    cores this process may use divided by the local ranks, unless ``OMP_NUM_THREADS`` was
    set to something other than torchrun's own default of 1 (which starves CPU ranks)."""
    if os.environ.get("KDEP_THREADS"):
        return max(1, env_int("KDEP_THREADS", 1, lo=0))
    d = env_ranks()
    if d is None or os.environ.get("OMP_NUM_THREADS", "1") != "1":
        return None
    return max(1, len(os.sched_getaffinity(0)) // max(1, d.local_world_size))


def close() -> None:
    """Destroy the default group (at exit). Its gloo threads end here, while the interpreter is
    whole, provided nothing else still refers to the group (see _GROUP_DEFAULT_MODULES)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()


def _guard(fn, what: str, rank: int):
    try:
        return fn()
    except (RuntimeError, ValueError) as e:  # gloo/NCCL report peers' deaths and timeouts so
        raise DistError(failure_line(rank, what, e)) from None


def failure_line(rank: int, what: str, e: BaseException) -> str:
    text = " ".join(str(e).split())[:240]
    return (f"rank {rank}: {what} failed ({type(e).__name__}: {text}): another rank died, "
            "raised or stalled past KDEP_DIST_TIMEOUT; rerun the same command to resume")
