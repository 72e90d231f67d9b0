"""Progress as users of such tools expect it: a tqdm bar for the whole run on a terminal, and
one log line per unit of work (epoch, shard) with an ETA for the whole run, kept on screen on
a terminal and written to the log off one (nohup, a pipe, CI), where every log line carries a
timestamp. Non-main ranks stay quiet.

A pipeline that runs this command as one of its stages may say so: ``KDEP_PIPELINE`` names
the stage (``quickstart 3/7``) and ``KDEP_PIPELINE_AFTER`` is the work of the stages after it
as a multiple of this stage's whole work (its own estimate); the ETA then also gives the time
to the end of the pipeline ("ETA 3m10s; quickstart 3/7: ~4m07s to the end")."""

from __future__ import annotations

import logging
import math
import os
import sys
import time

log = logging.getLogger("kdep_cache")
PIPELINE, PIPELINE_AFTER = "KDEP_PIPELINE", "KDEP_PIPELINE_AFTER"


def log_format(tty: bool) -> str:
    """The log line format: with the date and time off a terminal (a log file read later)."""
    return "%(levelname)s %(name)s: %(message)s" if tty else \
        "%(asctime)s %(levelname)s %(name)s: %(message)s"


LOG_DATEFMT = "%Y-%m-%d %H:%M:%S"


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def pipeline_after(env=os.environ) -> tuple[str, float] | None:
    """(stage name, work after this stage / this stage's work), or None (not set, or not a
    finite non-negative number: then only this stage's ETA is shown)."""
    name, after = env.get(PIPELINE), env.get(PIPELINE_AFTER)
    if not name or after is None:
        return None
    try:
        ratio = float(after)
    except ValueError:
        return None
    return (name, ratio) if math.isfinite(ratio) and ratio >= 0 else None


def eta_text(stage_left: float, stage_total: float, env=os.environ) -> str:
    """``ETA 3m10s`` for this stage, plus the time to the end of the pipeline when one says
    how much work follows (``KDEP_PIPELINE_AFTER`` x this stage's whole estimated time)."""
    text = f"ETA {duration(stage_left)}"
    p = pipeline_after(env)
    if p is not None:
        text += f"; {p[0]}: ~{duration(stage_left + p[1] * stage_total)} to the end"
    return text


class Progress:
    def __init__(self, total: float, unit: str, desc: str, enabled: bool = True,
                 initial: float = 0):
        from tqdm import tqdm  # here, so the CLI's log set-up imports no tqdm

        self.enabled, self.total, self.desc = enabled, total, desc
        self.tty = enabled and sys.stderr.isatty()
        self.bar = tqdm(total=total, initial=initial, unit=unit, desc=desc, dynamic_ncols=True,
                        disable=not self.tty, file=sys.stderr)
        self.t0, self.start, self.done = time.monotonic(), initial, initial

    def update(self, n: float = 1, **postfix) -> None:
        self.done += n
        self.bar.update(n)
        if postfix and self.tty:
            self.bar.set_postfix(postfix, refresh=False)

    def _rate(self) -> float:
        return (self.done - self.start) / max(time.monotonic() - self.t0, 1e-9)

    def eta(self) -> str:
        rate, left = self._rate(), self.total - self.done
        return duration(left / rate) if rate > 0 and left > 0 else "0s"

    def line(self, text: str) -> None:
        """A line that stays: above the bar on a terminal, in the log otherwise."""
        if not self.enabled:
            return
        rate, left = self._rate(), self.total - self.done
        if left > 0 and rate > 0:
            msg = f"{self.desc} {text}; {eta_text(left / rate, self.total / rate)}"
        elif left > 0:
            msg = f"{self.desc} {text}; ETA 0s"
        else:
            msg = f"{self.desc} {text}"
        if self.tty:
            self.bar.write(msg, file=sys.stderr)
        else:
            log.info("%s", msg)

    def close(self) -> None:
        self.bar.close()
