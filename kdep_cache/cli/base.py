"""The click group and the helpers every subcommand module uses (no subcommands here).

Errors from the library (:class:`KdepError`) become one line on stderr and a non-zero exit;
so do OS errors on a path (errno set: disk full, read-only, a file where a folder is
expected; :func:`~kdep_cache.errors.os_error_line`); unexpected exceptions too (``--debug`` shows the traceback). Ctrl-C prints the exact command
that resumes. Nothing here imports torch: option and path checks (:mod:`kdep_cache.checks`)
run before a subcommand imports its stage.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shlex
import shutil
import sys

import click

from .. import __version__
from ..errors import FileSystemError, KdepError, os_error_line
from ..runtime.progress import LOG_DATEFMT, log_format

PROG = "kdep-cache"
SAME_COMMAND_RESUMES = ("extract", "fit-svd")  # continue from the last shard when rerun


class _Group(click.Group):
    """Keeps the raw argument list, so an interrupted command can be printed back."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        ctx.meta["kdep_argv"] = list(args)
        return super().parse_args(ctx, args)


def resume_command(ctx: click.Context) -> str | None:
    """The shell-quoted command that continues an interrupted run of ``ctx``'s command:
    the same command (extract, fit-svd), the same with ``--resume`` (commands that have that
    flag), or None (read-only commands)."""
    argv = list(ctx.meta.get("kdep_argv") or [])
    if "resume" in ctx.params:
        if "--resume" not in argv:
            argv.append("--resume")
    elif ctx.info_name not in SAME_COMMAND_RESUMES:
        return None
    return shlex.join([*runnable_prog(), *argv])


def runnable_prog() -> list[str]:
    """How to start this program again from a shell, as printed in a resume command: the bare
    name where ``kdep-cache`` on PATH is the executable running now, else that executable's
    absolute path (after ``make`` without an active venv: ``/.../.venv/bin/kdep-cache``), or
    ``python -m kdep_cache`` when run so; the bare name when the caller is not a script."""
    exe = os.path.abspath(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    if os.path.basename(exe) == PROG:
        found = shutil.which(PROG)
        same = found is not None and os.path.realpath(found) == os.path.realpath(exe)
        return [PROG] if same else [exe]
    if exe.endswith(os.path.join("kdep_cache", "__main__.py")):
        return [sys.executable, "-m", "kdep_cache"]
    return [PROG]


def _run(fn):
    """Decorator: turn library errors into a one-line message + exit code."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return fn(*args, **kwargs)
        except KdepError as e:
            who = f"rank {_rank()}: " if _rank() != "0" and not str(e).startswith("rank ") else ""
            click.echo(f"error: {who}{e}", err=True)
            ctx.exit(e.exit_code)
        except KeyboardInterrupt:
            cmd = resume_command(ctx)
            click.echo("interrupted" + (f"; to resume, run: {cmd}" if cmd else ""), err=True)
            ctx.exit(130)
        except (click.exceptions.Exit, click.ClickException, SystemExit):
            raise
        except OSError as e:  # an OS error on a path (disk full, read-only, not a folder ...)
            if e.errno is None or ctx.find_root().params.get("debug"):
                _internal(ctx, e)
            who = f"rank {_rank()}: " if _rank() != "0" else ""
            click.echo(f"error: {who}{os_error_line(e)}", err=True)
            ctx.exit(FileSystemError.exit_code)
        except Exception as e:  # noqa: BLE001 - last line of defence for the user interface
            _internal(ctx, e)

    return wrapper


def _internal(ctx: click.Context, e: Exception) -> None:
    if ctx.find_root().params.get("debug"):
        raise e
    click.echo(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the "
               "traceback, and please report it)", err=True)
    ctx.exit(1)


def _rank() -> str:
    """This process's rank under torchrun ('0' otherwise)."""
    return os.environ.get("RANK", "0") if "WORLD_SIZE" in os.environ else "0"


def emit(summary: dict, as_json: bool = False) -> None:
    if _rank() != "0":  # under torchrun, rank 0 prints the summary
        return
    if as_json:
        click.echo(json.dumps(summary, indent=1, default=str))
        return
    for k, v in summary.items():
        click.echo(f"{k:>18}: {v}")


def configure_logging(verbose: int, quiet: bool) -> None:
    """Default: kdep-cache's INFO lines only; ``-v``: its DEBUG lines too (e.g. every file
    extract ignored); ``-vv``: DEBUG of every library; ``-q``: warnings and errors."""
    own = logging.WARNING if quiet or _rank() != "0" else (
        logging.DEBUG if verbose else logging.INFO)  # under torchrun, rank 0 reports
    root = logging.DEBUG if verbose > 1 else logging.WARNING
    logging.basicConfig(format=log_format(sys.stderr.isatty()), datefmt=LOG_DATEFMT,
                        stream=sys.stderr)  # off a terminal, each line with its time
    logging.getLogger().setLevel(root)
    logging.getLogger("kdep_cache").setLevel(own)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name=PROG)
@click.option("-v", "--verbose", count=True,
              help="More log output: -v lists details (e.g. ignored files), -vv debug.")
@click.option("-q", "--quiet", is_flag=True, help="Only warnings and errors.")
@click.option("--debug", is_flag=True, help="Show Python tracebacks for internal errors.")
def main(verbose: int, quiet: bool, debug: bool) -> None:
    """kdep-cache: Knowledge Distillation as Efficient Pre-training with a feature cache.

    extract -> fit-svd -> train-student -> transfer (see README.md).
    """
    configure_logging(verbose, quiet)
