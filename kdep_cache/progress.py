"""Progress as users of such tools expect it: a tqdm bar for the whole run on a terminal, and
one log line per unit of work (epoch, shard) with an ETA for the whole run, kept on screen on
a terminal and written to the log off one (nohup, a pipe, CI). Non-main ranks stay quiet."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("kdep_cache")


def duration(seconds: float) -> str:
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


class Progress:
    def __init__(self, total: float, unit: str, desc: str, enabled: bool = True,
                 initial: float = 0):
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

    def eta(self) -> str:
        rate = (self.done - self.start) / max(time.monotonic() - self.t0, 1e-9)
        left = self.total - self.done
        return duration(left / rate) if rate > 0 and left > 0 else "0s"

    def line(self, text: str) -> None:
        """A line that stays: above the bar on a terminal, in the log otherwise."""
        if not self.enabled:
            return
        msg = f"{self.desc} {text}; ETA {self.eta()}" if self.done < self.total else \
            f"{self.desc} {text}"
        if self.tty:
            self.bar.write(msg, file=sys.stderr)
        else:
            log.info("%s", msg)

    def close(self) -> None:
        self.bar.close()
