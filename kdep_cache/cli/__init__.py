"""The ``kdep-cache`` entry point: the group of :mod:`.base` with every subcommand.

The subcommand modules import the group from :mod:`.base` (not from here), so there is
no import circle; this module only gathers them.

Before anything imports torch, OpenMP's idle threads are told to spin only briefly before
they sleep (``GOMP_SPINCOUNT=1000``; libgomp's default is 300,000), unless the user set
``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``. Measured (benchmarks/results/contention.json,
ResNet-18 trainings): with the default spin, two trainings sharing the 2 cores ran at
0.4-0.55 of their fair share and three at 0.26; with 1,000 spins, 1.06-1.19 and 1.32. Alone,
a 64-px training keeps 0.975 of its speed; at 32 px (the smallest convolutions) 0.82-0.95
over runs. ``OMP_WAIT_POLICY=PASSIVE`` is as fair and slower alone (0.78-0.90 at 32 px).
"""

from __future__ import annotations

import os

if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "1000")

from .base import _run, emit, main  # noqa: E402

__all__ = ["main", "_run", "emit"]

# after the names above: a subcommand module that still imports them from here finds them
from . import audit, commands, transfer  # noqa: E402,F401  (register commands)
from .diagnose import diagnose  # noqa: E402

main.add_command(diagnose)
