"""Ctrl-C and progress, as a user sees them from the real CLI off a terminal: one log line per
epoch with loss, img/s and an ETA for the whole run; SIGINT stops within seconds with the
DataLoader workers gone and prints the exact command that resumes; that command resumes."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import extract_cfg

from kdep_cache.extract.run import extract
from kdep_cache.fit.run import FitConfig, fit_svd

pytestmark = pytest.mark.slow
KDEP = str(Path(sys.executable).parent / "kdep-cache")


def test_sigint_stops_fast_and_prints_the_command_that_resumes(tmp_path, teacher_file):
    shutil.copytree(Path(__file__).parent / "data" / "cifar", tmp_path / "images")
    extract(extract_cfg(tmp_path / "images", tmp_path / "cache", teacher_file))
    fit_svd(FitConfig(str(tmp_path / "cache"), str(tmp_path / "t"), dim=512, aligner="identity"))
    run = tmp_path / "run"
    args = [KDEP, "train-student", "--student", "resnet18", "--targets", str(tmp_path / "t"),
            "--out", str(run), "--epochs", "12", "--batch-size", "4", "--workers", "2",
            "--device", "cpu", "--lr", "0.001"]
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (run / "metrics.jsonl").is_file():
        assert p.poll() is None and time.monotonic() - t0 < 240
        time.sleep(0.05)
    time.sleep(0.5)
    workers = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                             text=True).stdout.split()
    assert len(workers) >= 2  # the persistent DataLoader workers
    p.send_signal(signal.SIGINT)
    t_int = time.monotonic()
    _, err = p.communicate(timeout=60)
    assert time.monotonic() - t_int < 10 and p.returncode == 130
    assert not [w for w in workers if os.path.exists(f"/proc/{w}")]
    epoch_lines = [x for x in err.splitlines() if re.search(r"epoch \d+/12: loss [\d.]+, "
                                                           r"[\d.]+ img/s, .*ETA \d", x)]
    assert epoch_lines, err[-1500:]  # off a terminal: one line per epoch, with the ETA
    last = err.strip().splitlines()[-1]
    assert last.startswith("interrupted; to resume, run: "), last
    cmd = shlex.split(last.split("run: ", 1)[1])
    assert cmd[-1] == "--resume" and cmd[1:-1] == args[1:]
    r = subprocess.run([KDEP, *cmd[1:]], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-1500:]
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 12
