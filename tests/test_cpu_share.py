"""Issue 23.20: CPU defaults that fit the free cores, and the slow-epoch hint."""

import itertools
import logging

import pytest
import torch

from kdep_cache.runtime import cpu_share
from kdep_cache.runtime.cpu_share import (
    WORKER_SHARE,
    after_epoch,
    apply_cpu_defaults,
    busy_cores,
    cpu_plan,
    slow_epoch_hint,
)


@pytest.mark.parametrize("cores,busy,kw,threads,workers", [
    (2, 0.0, {}, 2, 2),                    # quiet 2-core machine: as before (2 + 2)
    (2, 0.4, {}, 2, 1),                    # background noise: threads kept
    (2, 1.0, {}, 1, 1),                    # one busy neighbour thread
    (2, 2.0, {}, 1, 1),                    # another training (2 threads) already running
    (2, 7.5, {}, 1, 1),                    # busier than the cores: still one thread
    (1, 0.0, {}, 1, 1),
    (16, 0.0, {"max_threads": 8}, 8, 2),   # never above torch's own default (physical cores)
    (16, 5.3, {}, 11, 2),
    (2, 0.0, {"workers": 4}, 2, 4),        # the user's --workers is kept
    (2, 2.0, {"threads": 2}, 2, 1),        # the user's KDEP_THREADS is kept
    (4, -1.0, {}, 4, 2),                   # nonsense readings are clipped
])
def test_cpu_plan_table(cores, busy, kw, threads, workers):
    p = cpu_plan(cores, busy, **kw)
    assert (p.threads, p.workers) == (threads, workers)
    assert f"{threads} intra-op thread" in p.line()


def test_threads_and_busy_workers_never_exceed_the_free_cores():
    for cores, busy in itertools.product(range(1, 65), [0, 0.3, 0.5, 1, 1.5, 2, 3.7, 8, 100]):
        p = cpu_plan(cores, busy)
        free = max(1.0, cores - min(busy, cores))
        assert 1 <= p.threads <= cores and p.workers >= 1
        assert p.threads == 1 or p.threads + p.workers * WORKER_SHARE <= free + 0.5, (cores, busy)


def test_busy_cores_reads_the_runnable_threads_less_this_one(tmp_path, monkeypatch):
    f = tmp_path / "loadavg"
    f.write_text("9.57 5.05 2.14 3/167 15984\n")  # 1-min average ignored: it lags
    monkeypatch.setattr(cpu_share.os, "cpu_count", lambda: 2)
    assert busy_cores(2, samples=3, interval=0, path=str(f)) == 2.0
    monkeypatch.setattr(cpu_share.os, "cpu_count", lambda: 8)  # 2 of 8 cpus are ours
    assert busy_cores(2, samples=1, path=str(f)) == 0.5
    f.write_text("garbage")
    assert busy_cores(2, samples=1, path=str(f)) == 0.0
    assert busy_cores(2, samples=1, path=str(tmp_path / "missing")) == 0.0


def _h(*rates):
    return [{"epoch": i + 1, "images_per_s": r} for i, r in enumerate(rates)]


def test_slow_epoch_hint_once_when_an_epoch_falls_far_below_the_first(caplog):
    with caplog.at_level(logging.WARNING, logger="kdep_cache"):
        assert slow_epoch_hint(_h(100)) is None
        assert slow_epoch_hint(_h(100, 90, 55)) is None
        msg = slow_epoch_hint(_h(100, 90, 40))
        assert slow_epoch_hint(_h(100, 90, 40, 30)) is None  # once per run
        assert slow_epoch_hint(_h(100, None)) is None
    assert msg.startswith("epoch 3 ran at 40 img/s, 0.40x the first epoch's 100")
    assert "KDEP_THREADS=1" in msg and caplog.text.count("img/s, 0.") == 1
    # issue 24: a training that already runs one thread is not told to use KDEP_THREADS=1
    one = [{**h, "threads": 1} for h in _h(100, 90, 40)]
    msg1 = slow_epoch_hint(one)
    assert "KDEP_THREADS" not in msg1 and msg1.endswith(
        "it already runs one thread; to yield, stop it (Ctrl-C) and rerun it with --resume later")


@pytest.fixture()
def restore_threads(monkeypatch):
    n = torch.get_num_threads()
    monkeypatch.delenv("KDEP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(cpu_share, "usable_cores", lambda: 2)
    monkeypatch.setattr(cpu_share, "_TORCH_DEFAULT_THREADS", 2)
    monkeypatch.setattr(cpu_share, "register", lambda folder=None: None)
    monkeypatch.setattr(cpu_share, "other_trainings", lambda folder=None: 0)
    yield
    torch.set_num_threads(n)


def test_apply_sets_threads_from_the_load_and_a_resume_keeps_the_run_s(monkeypatch,
                                                                      restore_threads):
    cpu = torch.device("cpu")
    monkeypatch.setattr(cpu_share, "busy_cores", lambda cores, **kw: 2.0)
    assert apply_cpu_defaults(cpu, None, False) == 1 and torch.get_num_threads() == 1
    assert apply_cpu_defaults(cpu, 3, False) == 3  # --workers kept
    resumed = [{"epoch": 1, "images_per_s": 50.0, "threads": 2}]
    assert apply_cpu_defaults(cpu, None, False, resumed) == 1 and torch.get_num_threads() == 2
    monkeypatch.setattr(cpu_share, "busy_cores", lambda cores, **kw: 0.0)
    assert apply_cpu_defaults(cpu, None, False) == 2 and torch.get_num_threads() == 2
    monkeypatch.setattr(cpu_share, "other_trainings", lambda folder=None: 1)  # started with us
    assert apply_cpu_defaults(cpu, None, False) == 1 and torch.get_num_threads() == 1
    monkeypatch.setenv("KDEP_THREADS", "2")  # the user's threads: not lowered under load
    torch.set_num_threads(2)  # as dist.context sets them from KDEP_THREADS
    monkeypatch.setattr(cpu_share, "busy_cores", lambda cores, **kw: 2.0)
    assert apply_cpu_defaults(cpu, None, False) == 1 and torch.get_num_threads() == 2
    assert apply_cpu_defaults(torch.device("meta"), None, False) is None  # not the CPU
    assert apply_cpu_defaults(cpu, None, True) is None  # torchrun: dist sets the threads
    h = _h(10.0)
    after_epoch(h)
    assert h[0]["threads"] == torch.get_num_threads()


def test_the_cpu_line_says_who_set_the_threads(monkeypatch, restore_threads, caplog):
    """Issue 24: with KDEP_THREADS=1 the line read '2.0 busy at start -> 1 intra-op thread', as
    if the load had chosen it; a pinned or resumed count now names where it came from."""
    cpu = torch.device("cpu")
    monkeypatch.setattr(cpu_share, "busy_cores", lambda cores, **kw: 2.0)
    monkeypatch.delenv("KDEP_THREADS", raising=False)
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    with caplog.at_level(logging.INFO, logger="kdep_cache.runtime.cpu_share"):
        apply_cpu_defaults(cpu, None, False)
        assert caplog.records[-1].getMessage().endswith(
            "busy at start -> 1 intra-op thread, 1 loader worker (KDEP_THREADS / --workers pin "
            "them)")
        apply_cpu_defaults(cpu, None, False, [{"epoch": 1, "threads": 2}])
        assert caplog.records[-1].getMessage().endswith(
            "-> 2 intra-op threads (from the resumed run), 1 loader worker (--workers pins it)")
        monkeypatch.setenv("KDEP_THREADS", "1")
        torch.set_num_threads(1)
        apply_cpu_defaults(cpu, 3, False)
        assert caplog.records[-1].getMessage() == (
            "cpu: 2 cores -> 1 intra-op thread (from KDEP_THREADS=1), 3 loader workers "
            "(from --workers)")


def test_trainings_started_together_see_each_other_in_the_registry(tmp_path):
    import subprocess
    import sys
    folder = tmp_path / "reg"
    cpu_share.register(folder)
    assert cpu_share.other_trainings(folder) == 0  # itself is not counted
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (folder / str(other.pid)).touch()
        (folder / "999999999").touch()  # a dead training's note: removed
        (folder / "junk").touch()
        assert cpu_share.other_trainings(folder) == 1
        assert not (folder / "999999999").exists()
        import os
        old = (folder / str(other.pid)).stat().st_mtime - 300
        os.utime(folder / str(other.pid), (old, old))  # noted 5 min ago: the load shows it
        assert cpu_share.other_trainings(folder) == 0
    finally:
        other.kill()
        other.wait()
    assert cpu_share.other_trainings(folder) == 0
