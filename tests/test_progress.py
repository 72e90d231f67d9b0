"""Issue 24.8: off a terminal every log line carries its time; a pipeline stage's ETA also
gives the time to the end of the pipeline when the pipeline says how much work follows."""

import logging
import re
import subprocess
import sys
import time

from kdep_cache.runtime.progress import Progress, eta_text, pipeline_after


def test_log_lines_off_a_terminal_carry_date_and_time():
    code = ("import logging; from kdep_cache.cli.base import configure_logging\n"
            "configure_logging(0, False); logging.getLogger('kdep_cache.x').info('hello')\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d INFO kdep_cache\.x: hello\n", r.stderr), \
        r.stderr


def test_pipeline_eta_adds_the_work_after_this_stage(monkeypatch, caplog):
    env = {"KDEP_PIPELINE": "quickstart 3/7", "KDEP_PIPELINE_AFTER": "0.5"}
    assert eta_text(10, 20, env) == "ETA 10s; quickstart 3/7: ~20s to the end"
    assert eta_text(10, 20, {}) == "ETA 10s"
    for bad in ("abc", "nan", "-1", "inf"):  # a bad estimate: this stage's ETA only
        assert pipeline_after({**env, "KDEP_PIPELINE_AFTER": bad}) is None
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    p = Progress(10, "batch", "train")
    p.t0 = time.monotonic() - 10.0  # 5 of 10 done in 10 s: 10 s left, 20 s for the stage
    p.update(5)
    with caplog.at_level(logging.INFO, logger="kdep_cache"):
        p.line("epoch 1/2")
    p.close()
    assert "train epoch 1/2; ETA 10s; quickstart 3/7: ~20s to the end" in caplog.text
