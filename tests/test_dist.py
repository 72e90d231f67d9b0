"""torch.distributed: every stage under torchrun (gloo, 2 CPU processes) equals one process.

Each test launches real ``torchrun`` subprocesses on the loopback interface."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import warnings
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import torchvision

from kdep_cache.storage.fsio import lock_holder_alive

pytestmark = pytest.mark.slow
CIFAR = Path(__file__).parent / "data" / "cifar"
BIN = Path(sys.executable).parent
KDEP = str(BIN / "kdep-cache")
TORCHRUN = str(BIN / "torchrun")


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(**kw) -> dict:
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR",
                        "MASTER_PORT")}
    return {**env, "KDEP_DIST_TIMEOUT": "60", **kw}


TEARDOWN_ABORT = "terminate called without an active exception"


def torchrun(*args, nproc=2, extra=(), timeout=300, check=True, **popen):
    cmd = [TORCHRUN, *extra, "--nproc-per-node", str(nproc), "--no-python", KDEP, *map(str, args)]
    if not extra:
        cmd[1:1] = ["--standalone"]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                       **popen)
    if TEARDOWN_ABORT in r.stderr:
        # the root cause is fixed (runtime/dist.py _GROUP_DEFAULT_MODULES: a module imported
        # after the group formed kept it alive past destroy_process_group, so gloo's threads
        # were never joined); test_dist_errors.py holds the threads to close() deterministically.
        # The abort was seen in ~1 of 6 runs before and never reproduced on demand, so one
        # rerun stays, loudly: a second abort fails
        warnings.warn(f"torchrun {args[0]}: a rank aborted in gloo's teardown at exit, which "
                      "the fix should prevent: reran once", stacklevel=2)
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=_env(),
                           **popen)
        assert TEARDOWN_ABORT not in r.stderr, (
            f"torchrun {args[0]}: a rank aborted in gloo's teardown at exit twice\n"
            f"{r.stderr[-3000:]}")
    if check:
        assert r.returncode == 0, r.stderr[-3000:]
    return r


def one(*args, timeout=300):
    r = subprocess.run([KDEP, *map(str, args)], capture_output=True, text=True, env=_env(),
                       timeout=timeout)
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def _extract_args(data, out, teacher):
    return ["extract", "--data", data, "--teacher", "resnet18", "--teacher-weights", teacher,
            "--out", out, "--views", 2, "--image-size", 32, "--workers", 0, "--device", "cpu",
            "--shard-size", 4, "--batch-size", 4]


def _same_cache(a: Path, b: Path) -> None:
    sa, sb = sorted(a.glob("shard-*.h5")), sorted(b.glob("shard-*.h5"))
    assert [p.name for p in sa] == [p.name for p in sb] and sa
    for x, y in zip(sa, sb):
        with h5py.File(x, "r") as f, h5py.File(y, "r") as g:
            assert sorted(f) == sorted(g)
            for k in f:
                assert np.array_equal(f[k][()], g[k][()]), (x.name, k)
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    assert ma["fingerprint"] == mb["fingerprint"]


@pytest.fixture(scope="module")
def ref(tmp_path_factory):
    d = tmp_path_factory.mktemp("dist")
    shutil.copytree(CIFAR, d / "images")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18().state_dict(), d / "r18.pth")
    one(*_extract_args(d / "images", d / "cache", d / "r18.pth"))
    one("fit-svd", "--cache", d / "cache", "--out", d / "targets", "--dim", 512,
        "--aligner", "identity")
    return d


def test_torchrun_extract_equals_one_process(ref, tmp_path):
    r = torchrun(*_extract_args(ref / "images", tmp_path / "c", ref / "r18.pth"))
    assert r.stdout.count("images_processed") == 1  # rank 0 alone prints the summary
    _same_cache(ref / "cache", tmp_path / "c")
    assert not list((tmp_path / "c").glob(".lock*"))


def test_two_nodes_on_localhost_equal_one_process(ref, tmp_path):
    port = _port()
    procs = [subprocess.Popen(
        [TORCHRUN, "--nnodes", "2", "--node-rank", str(n), "--rdzv-backend", "c10d",
         "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "kdep-test", "--nproc-per-node",
         "1", "--no-python", KDEP,
         *map(str, _extract_args(ref / "images", tmp_path / "c", ref / "r18.pth"))],
        env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for n in (0, 1)]
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err[-3000:]
    _same_cache(ref / "cache", tmp_path / "c")


def _train_args(ref, out, *more):
    return ["train-student", "--student", "resnet18", "--targets", ref / "targets", "--out", out,
            "--epochs", 2, "--batch-size", 8, "--image-size", 64, "--lr", 0.001, "--workers", 0,
            "--device", "cpu", "--precision", "fp32", *more]


def _params(run: Path) -> torch.Tensor:
    sd = torch.load(run / "student.pth", weights_only=True)
    return torch.cat([v.flatten() for k, v in sorted(sd.items())
                      if v.dtype.is_floating_point and "running" not in k])


def test_ddp_sync_bn_equals_one_process_with_the_global_batch(ref, tmp_path):
    """2 ranks x 4 images with --sync-bn == 1 process x 8 images, 2 epochs. Without --sync-bn
    (per-rank BatchNorm statistics) the same comparison fails: the check can tell."""
    one(*_train_args(ref, tmp_path / "one"))
    torchrun(*_train_args(ref, tmp_path / "ddp", "--sync-bn"))
    torchrun(*_train_args(ref, tmp_path / "nosync"))
    a, b, c = (_params(tmp_path / x) for x in ("one", "ddp", "nosync"))
    rel = lambda x, y: float((x - y).norm() / x.norm())  # noqa: E731
    assert rel(a, b) < 1e-5, rel(a, b)
    assert rel(a, c) > 1e-5 * 10, rel(a, c)
    la, lb = ([json.loads(x)["loss"] for x in (tmp_path / r / "metrics.jsonl").open()]
              for r in ("one", "ddp"))
    assert np.allclose(la, lb, rtol=1e-4), (la, lb)  # global-batch losses, logged by rank 0
    for r in ("ddp", "nosync"):
        assert sorted(p.name for p in (tmp_path / r).iterdir()) == [
            "metrics.jsonl", "student.json", "student.pth", "student.safetensors"]


def _kill_after_first_checkpoint(cmd: list, run: Path, env: dict) -> None:
    p = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    t0 = time.monotonic()
    while not (run / "checkpoint.pt").is_file():
        assert p.poll() is None and time.monotonic() - t0 < 240
        time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(30)
    t0 = time.monotonic()  # the ranks (same group) die asynchronously after torchrun itself
    while (run / ".lock").is_file() and lock_holder_alive(run / ".lock"):
        assert time.monotonic() - t0 < 30, "a killed rank is still alive after 30 s"
        time.sleep(0.05)


def test_two_rank_checkpoint_resumes_on_two_ranks_only(ref, tmp_path):
    """The ranks and --sync-bn decide the BatchNorm statistics: a 2-rank run resumes on 2
    ranks with --sync-bn; one process (or no --sync-bn) is refused with one line."""
    run = tmp_path / "run"
    args = _train_args(ref, run, "--sync-bn")
    args[args.index("--epochs") + 1] = 3
    _kill_after_first_checkpoint([TORCHRUN, "--standalone", "--nproc-per-node", "2",
                                  "--no-python", KDEP, *map(str, args)], run, _env())
    first = json.loads((run / "metrics.jsonl").read_text().splitlines()[0])
    r = subprocess.run([KDEP, *map(str, [a for a in args if a != "--sync-bn"]), "--resume"],
                       capture_output=True, text=True, env=_env(), timeout=300)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1, r.stderr[-2000:]
    assert "world_size: 2 (existing) vs 1 (now)" in errors[0]
    torchrun(*args, "--resume")
    hist = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3] and hist[0] == first


def test_two_nodes_with_node_local_out_resume_at_rank_0s_epoch(ref, tmp_path):
    """Each node has its own --out (node 1's stays empty: rank 0 alone writes). Killed after
    epoch 1 and resumed, rank 1 starts where rank 0's checkpoint says (was: at epoch 0, then
    mismatched collectives) and the run ends as an uninterrupted one on the same 2 nodes."""
    def nodes(name, resume=False):
        procs, port = [], _port()
        for n in (0, 1):
            args = _train_args(ref, tmp_path / name / f"node{n}", "--epochs", 3)
            procs.append(subprocess.Popen(
                [TORCHRUN, "--nnodes", "2", "--node-rank", str(n), "--rdzv-backend", "c10d",
                 "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", f"kdep-{name}-{resume}",
                 "--nproc-per-node", "1", "--no-python", KDEP, *map(str, args),
                 *(["--resume"] if resume else [])], env=_env(), stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE, text=True, start_new_session=True))
        return procs

    def finish(procs):
        for p in procs:
            _, err = p.communicate(timeout=300)
            assert p.returncode == 0, err[-3000:]

    run0 = tmp_path / "broken" / "node0"
    procs = nodes("broken")
    t0 = time.monotonic()
    while not (run0 / "checkpoint.pt").is_file():
        assert all(p.poll() is None for p in procs) and time.monotonic() - t0 < 240
        time.sleep(0.05)
    for p in procs:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)
    t0 = time.monotonic()
    while (run0 / ".lock").is_file() and lock_holder_alive(run0 / ".lock"):
        assert time.monotonic() - t0 < 30
        time.sleep(0.05)
    assert not (tmp_path / "broken" / "node1" / "checkpoint.pt").exists()
    finish(nodes("broken", resume=True))
    hist = [json.loads(x) for x in (run0 / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    finish(nodes("unbroken"))
    a, b = _params(tmp_path / "unbroken" / "node0"), _params(run0)
    assert torch.equal(a, b), float((a - b).norm() / a.norm())


def test_a_killed_rank_stops_the_others_with_one_line(ref, tmp_path):
    """Ranks started by a scheduler (no torchrun agent to stop them): rank 1 is killed
    mid-training; rank 0 fails in its next collective with one line naming itself, fast."""
    port = _port()
    args = _train_args(ref, tmp_path / "run")
    args[args.index("--epochs") + 1] = 50
    procs = []
    for rank in (0, 1):
        env = _env(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE="2",
                   MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), KDEP_DIST_TIMEOUT="30")
        procs.append(subprocess.Popen([KDEP, *map(str, args)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    run = tmp_path / "run"
    t0 = time.monotonic()
    while not (run / "metrics.jsonl").is_file():
        assert procs[0].poll() is None and time.monotonic() - t0 < 240
        time.sleep(0.05)
    procs[1].send_signal(signal.SIGKILL)
    t_kill = time.monotonic()
    _, err = procs[0].communicate(timeout=90)
    assert time.monotonic() - t_kill < 45  # bounded by the (shortened) collective timeout
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert procs[0].returncode == 5 and len(errors) == 1, err[-2000:]
    assert "rank 0:" in errors[0] and "rerun the same command" in errors[0]
    assert not list(run.glob("*.tmp"))
    procs[1].wait(10)


def _rank_pid(parent: int, rank: int) -> int | None:
    """The pid of torchrun ``parent``'s worker of rank ``rank`` (from /proc), or None."""
    for d in Path("/proc").iterdir():
        try:
            if int((d / "stat").read_text().split(") ")[1].split()[1]) != parent:
                continue
            if f"RANK={rank}".encode() in (d / "environ").read_bytes().split(b"\0"):
                return int(d.name)
        except (OSError, ValueError, IndexError):
            continue
    return None


def test_a_rank_killed_during_torchrun_extract_leaves_one_kdep_line(ref, tmp_path):
    """torchrun stops the survivor (SIGTERM) when a rank dies: it ends with the one line."""
    imgs = tmp_path / "images"
    for n in range(8):  # enough shards that rank 0 is still working when rank 1 dies
        shutil.copytree(CIFAR, imgs / f"copy{n}")
    args = _extract_args(imgs, tmp_path / "c", ref / "r18.pth")
    args[args.index("--image-size") + 1] = 96
    p = subprocess.Popen([TORCHRUN, "--standalone", "--nproc-per-node", "2", "--no-python",
                          KDEP, *map(str, args)], env=_env(), stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    t0, pid = time.monotonic(), None
    while not list((tmp_path / "c").glob("shard-*.h5")) or pid is None:
        assert p.poll() is None and time.monotonic() - t0 < 240
        pid = pid or _rank_pid(p.pid, 1)
        time.sleep(0.02)
    os.kill(pid, signal.SIGKILL)
    _, err = p.communicate(timeout=120)
    errors = [x for x in err.splitlines() if x.startswith("error:")]
    assert p.returncode != 0 and len(errors) == 1, err[-3000:]
    assert errors[0].startswith("error: rank 0:") and "rerun the same command" in errors[0]
    # rank 0 (SIGTERM) leaves no partial file; the SIGKILLed rank may leave its own .tmp (a
    # kill -9 cannot be caught: never taken as complete), which the rerun removes
    left = list((tmp_path / "c").glob("*.tmp"))
    assert all(f.name.rsplit(".", 2)[-2] == str(pid) for f in left), left
    r = torchrun(*args)
    assert r.returncode == 0 and (tmp_path / "c" / "manifest.json").is_file()
    assert not list((tmp_path / "c").glob("*.tmp"))


def test_torchrun_fit_svd_equals_one_process_and_shares_a_refusal(ref, tmp_path):
    """Rank 0 fits (one BLAS thread, so bitwise the one-process result) while rank 1 waits;
    a refusal on rank 0 reaches rank 1 as one line."""
    for args in (("--dim", 8), ("--dim", 512, "--aligner", "identity")):
        one("fit-svd", "--cache", ref / "cache", "--out", tmp_path / f"one{args[1]}", *args)
        torchrun("fit-svd", "--cache", ref / "cache", "--out", tmp_path / f"ddp{args[1]}", *args)
        fa, fb = (json.loads((tmp_path / f"{w}{args[1]}" / "manifest.json").read_text())
                  for w in ("one", "ddp"))
        assert fa["fingerprint"] == fb["fingerprint"]
        assert fa["projection_fingerprint"] == fb["projection_fingerprint"]
    # a refusal the option checks find: every rank says it itself, before any group forms
    # (torchrun may stop the slower rank before it prints: one or two lines)
    r = torchrun("fit-svd", "--cache", ref / "cache", "--out", tmp_path / "bad", "--dim", 600,
                 check=False)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode != 0 and len(errors) in (1, 2), r.stderr[-2000:]
    assert "internal error" not in r.stderr
    assert all("larger than the teacher width" in e for e in errors)
    assert not (tmp_path / "bad").exists()
    # a refusal only rank 0's pass over the features finds (a non-finite feature): shared
    from conftest import make_fake_cache
    feats = np.random.default_rng(0).normal(size=(1, 20, 8))
    feats[0, 3, 2] = np.nan
    make_fake_cache(tmp_path / "nan", feats, 10)
    r = torchrun("fit-svd", "--cache", tmp_path / "nan", "--out", tmp_path / "bad2", "--dim", 4,
                 check=False)
    errors = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert r.returncode != 0 and len(errors) == 2, r.stderr[-2000:]
    assert "non-finite" in " ".join(errors) and "rank 0 could not" in " ".join(errors)


def test_torchrun_transfer_linear_equals_one_process_and_finetune_runs(ref, tmp_path):
    """Linear probe: features sharded across 2 ranks, gathered, fitted once on rank 0 == one
    process. Fine-tune: DDP on slices of each global batch; rank 0 alone writes."""
    common = ["--student", "random:resnet18", "--data", ref / "images", "--seeds", 0,
              "--device", "cpu", "--image-size", 32, "--workers", 0]
    one("transfer", *common, "--out", tmp_path / "one")
    torchrun("transfer", *common, "--out", tmp_path / "ddp")
    a, b = (json.loads((tmp_path / w / "results.json").read_text())["seeds"][0]
            for w in ("one", "ddp"))
    assert a["test_top1"] == b["test_top1"] and a["C"] == b["C"]
    r = torchrun("transfer", *common, "--mode", "finetune", "--epochs", 2, "--batch-size", 4,
                 "--out", tmp_path / "ft")
    assert r.stdout.count("final_top1") == 1  # rank 0 alone reports
    res = json.loads((tmp_path / "ft" / "results.json").read_text())
    assert res["ranks"] == 2 and len(res["seeds"][0]["history"]) == 2
    bad = torchrun("transfer", "--task", "segmentation", *common, "--out", tmp_path / "seg",
                   check=False)
    assert bad.returncode != 0 and "does not run under torchrun yet" in bad.stderr
