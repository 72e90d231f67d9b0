"""Issue 24.2: `make quickstart` after an interruption resumes. The real script at tiny sizes
(its environment knobs) is killed (SIGKILL, the whole process group) while train-student has
written a checkpoint, then run again: it must finish, resuming the training, not refuse it."""

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _data(tmp_path: Path) -> Path:
    src = Path(__file__).parent / "data" / "cifar"
    for cls in ("cat", "ship"):
        files = sorted((src / cls).iterdir())
        for split, part in (("train", files[:4]), ("test", files[4:])):
            (tmp_path / "data" / split / cls).mkdir(parents=True)
            for f in part:
                shutil.copy(f, tmp_path / "data" / split / cls / f.name)
    return tmp_path / "data"


@pytest.mark.slow
def test_quickstart_rerun_after_a_kill_resumes_and_finishes(tmp_path):
    out = tmp_path / "qs"
    env = {**os.environ, "OUT": str(out), "DATA": str(_data(tmp_path)), "VIEWS": "2",
           "SIZE": "32", "NULL": "zero", "EPOCHS": "40", "BATCH": "4", "FT_EPOCHS": "1",
           "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "PYTHONPATH": str(ROOT)}
    script = [str(ROOT / "pipelines" / "quickstart.sh")]
    p = subprocess.Popen(["bash", *script], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ckpt, t0 = out / "r18-kdep" / "checkpoint.pt", time.monotonic()
    while not ckpt.exists():
        assert p.poll() is None, p.stdout.read()[-3000:]
        assert time.monotonic() - t0 < 400
        time.sleep(0.02)
    os.killpg(p.pid, signal.SIGKILL)
    first = p.communicate(timeout=60)[0]
    assert not (out / "r18-kdep" / "student.pth").exists(), "training ended before the kill"
    assert "3/8 train-student" in first and "--resume" not in first
    r = subprocess.run(["bash", *script], env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, (r.stdout[-3000:], r.stderr[-3000:])
    assert f"resuming the interrupted run in {out}/r18-kdep" in r.stderr
    assert "holds an interrupted run" not in r.stderr
    assert (out / "table.md").is_file() and "Wall time" in r.stdout
    assert len((out / "r18-kdep" / "metrics.jsonl").read_text().splitlines()) == 40
    # stages show progress, off a terminal as timestamped log lines with the pipeline ETA
    assert "quickstart 3/8: ~" in r.stderr and " INFO kdep_cache" in r.stderr


@pytest.mark.parametrize("layout,want", [([], ""), (["checkpoint.pt"], "--resume"),
                                         (["seed-0/checkpoint.pt"], "--resume"),
                                         (["student.pth"], "")])
def test_resume_helper_of_the_pipeline_scripts(tmp_path, layout, want):
    run = tmp_path / "run"
    for rel in layout:
        (run / rel).parent.mkdir(parents=True, exist_ok=True)
        (run / rel).write_bytes(b"")
    r = subprocess.run(["bash", "-c", f'. {ROOT}/pipelines/resume.sh; resume "$1"', "x",
                        str(run)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and r.stdout.strip() == want
    assert ("resuming the interrupted run" in r.stderr) == bool(want)
