"""The ``kdep-cache`` entry point: the group of :mod:`.cli_base` with every subcommand.

The subcommand modules import the group from :mod:`.cli_base` (not from here), so there is
no import circle; this module only gathers them.

Before anything imports torch, OpenMP's idle threads are told to sleep instead of spinning
(``OMP_WAIT_POLICY=PASSIVE`` unless the user set it): with spinning threads, trainings that
share cores with other jobs collapsed (measured in benchmarks/results/contention.json).
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from .cli_base import _run, emit, main  # noqa: E402

__all__ = ["main", "_run", "emit"]

# after the names above: a subcommand module that still imports them from here finds them
from . import cli_commands, cli_inspect, cli_transfer  # noqa: E402,F401  (register commands)
from .cli_diagnose import diagnose  # noqa: E402

main.add_command(diagnose)
