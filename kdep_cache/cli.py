"""Thin click layer: parse options, call one library function, print its summary.

Errors from the library (:class:`KdepError`) become one line on stderr and a non-zero exit;
unexpected exceptions too (``--debug`` shows the traceback).
"""

from __future__ import annotations

import functools
import json
import logging
import sys

import click

from . import __version__
from .errors import KdepError


def _run(fn):
    """Decorator: turn library errors into a one-line message + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except KdepError as e:
            click.echo(f"error: {e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted: rerun the same command to resume", err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except Exception as e:  # noqa: BLE001 - last line of defence for the user interface
            if ctx.find_root().params.get("debug"):
                raise
            click.echo(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the "
                       "traceback, and please report it)", err=True)
            ctx.exit(1)

    return wrapper


def emit(summary: dict, as_json: bool = False) -> None:
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
        return
    for k, v in summary.items():
        click.echo(f"{k:>18}: {v}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="kdep-cache")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
def main(verbose: int, quiet: bool, debug: bool) -> None:
    """kdep-cache: Knowledge Distillation as Efficient Pre-training with a feature cache.

    extract -> fit-svd -> train-student -> transfer (see README.md).
    """
    level = logging.WARNING if quiet else (logging.DEBUG if verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s",
                        stream=sys.stderr)


from . import cli_commands, cli_inspect, cli_transfer  # noqa: E402,F401  (registers commands)
