"""The ``kdep-cache`` entry point: the group of :mod:`.cli_base` with every subcommand.

The subcommand modules import the group from :mod:`.cli_base` (not from here), so there is
no import circle; this module only gathers them.
"""

from __future__ import annotations

from .cli_base import _run, emit, main

__all__ = ["main", "_run", "emit"]

# after the names above: a subcommand module that still imports them from here finds them
from . import cli_commands, cli_inspect, cli_transfer  # noqa: E402,F401  (register commands)
