"""A peer's death inside collectives torch runs itself (DDP forward / backward) becomes the
one DistError line; any other error of this rank stays what it is."""

import os

import pytest

from kdep_cache.runtime.dist import Dist, DistError

GLOO = ("[../third_party/gloo/gloo/transport/tcp/pair.cc:545] Read error "
        "[127.0.0.1]:16585: Connection reset by peer")


def test_peer_death_in_implicit_collectives_is_one_line():
    with pytest.raises(DistError) as e:
        with Dist(rank=1, world_size=2).implicit("train: DDP gradient all-reduce"):
            raise RuntimeError(GLOO)
    assert str(e.value).startswith("rank 1: train: DDP gradient all-reduce failed")
    assert "rerun the same command" in str(e.value) and "\n" not in str(e.value)


def test_other_errors_and_one_process_are_left_alone():
    with pytest.raises(RuntimeError, match="shapes cannot be multiplied"):
        with Dist(rank=0, world_size=2).implicit("train: DDP forward"):
            raise RuntimeError("mat1 and mat2 shapes cannot be multiplied (4x3 and 5x6)")
    with pytest.raises(RuntimeError, match="Connection reset"):
        with Dist().implicit("train: DDP forward"):
            raise RuntimeError(GLOO)


def test_a_rank_whose_peer_never_joins_stops_within_the_join_timeout(tmp_path):
    """A peer that died before the group formed: the one line after KDEP_DIST_INIT_TIMEOUT
    (was: the whole 30-min KDEP_DIST_TIMEOUT, then 'internal error')."""
    import os
    import socket
    import subprocess
    import sys
    import time
    from pathlib import Path

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    import numpy as np
    from conftest import make_fake_cache  # a real raw cache: fit-svd's own checks pass
    make_fake_cache(tmp_path / "cache", np.random.default_rng(0).normal(size=(1, 16, 8)), 8)
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_WORLD_SIZE",)}
    env.update(RANK="0", WORLD_SIZE="2", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), KDEP_DIST_INIT_TIMEOUT="2", KDEP_DIST_TIMEOUT="600")
    t0 = time.monotonic()
    r = subprocess.run([str(Path(sys.executable).parent / "kdep-cache"), "fit-svd", "--cache",
                        str(tmp_path / "cache"), "--out", str(tmp_path / "t"), "--dim", "8"],
                       env=env, capture_output=True, text=True, timeout=120)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 5 and len(errors) == 1, r.stderr[-2000:]
    assert "rank 0: the 2 ranks did not all join within 2 s (KDEP_DIST_INIT_TIMEOUT" in errors[0]
    assert time.monotonic() - t0 < 60


def test_sigterm_from_torchrun_is_the_one_line(monkeypatch):
    """torchrun stops the surviving ranks with SIGTERM when one dies: each ends with the
    DistError line (was: torchrun's traceback only)."""
    import os
    import signal

    from kdep_cache.runtime.dist import stop_on_sigterm
    old = signal.getsignal(signal.SIGTERM)
    try:
        stop_on_sigterm(1)
        with pytest.raises(DistError, match="^rank 1: stopped by SIGTERM .* rerun the same"):
            os.kill(os.getpid(), signal.SIGTERM)  # the handler runs before kill returns
    finally:
        signal.signal(signal.SIGTERM, old)


# after the CLI's own exit handlers (dist.close among them: registered later, run first), the
# threads of this process that are still alive; printed as one line on stderr
_EXIT_THREADS = """
import atexit, os, sys
def report():
    names = []
    for t in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{t}/comm") as f:
                names.append(f.read().strip())
        except OSError:
            pass
    print("threads at exit:", sorted(names), file=sys.stderr, flush=True)
atexit.register(report)
from kdep_cache.cli import main
main(prog_name="kdep-cache")
"""


@pytest.mark.skipif(not os.path.isdir("/proc/self/task"), reason="thread names from /proc")
def test_the_group_and_its_gloo_threads_end_before_the_interpreter_does(tmp_path):
    """fit-svd's rank 0 imports torchvision (for the manifest) after the group formed, which
    imports torch.distributed.nn.functional, whose functions keep ``group.WORLD`` as default
    arguments: destroy_process_group then could not free the group, gloo's threads ran on into
    interpreter finalization, and now and then the finished rank aborted there ('terminate
    called without an active exception'; torchrun reported a failure after the work was done).
    Here: a one-rank gloo group, as torchrun's environment makes it; no gloo thread may be left
    once the CLI's exit handlers ran."""
    import socket
    import subprocess
    import sys

    import numpy as np
    from conftest import make_fake_cache
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    make_fake_cache(tmp_path / "cache", np.random.default_rng(0).normal(size=(1, 16, 8)), 8)
    env = {k: v for k, v in os.environ.items() if k != "LOCAL_WORLD_SIZE"}
    env.update(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
               MASTER_PORT=str(port), KDEP_DIST_TIMEOUT="60")
    r = subprocess.run([sys.executable, "-c", _EXIT_THREADS, "fit-svd", "--cache",
                        str(tmp_path / "cache"), "--out", str(tmp_path / "t"), "--dim", "4"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert (tmp_path / "t" / "manifest.json").is_file()
    line = [x for x in r.stderr.splitlines() if x.startswith("threads at exit:")]
    assert len(line) == 1, r.stderr[-2000:]
    assert "gloo" not in line[0], line[0]  # pt_gloo_runloop / gloo_tcp_loop outlived close()
