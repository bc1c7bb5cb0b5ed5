"""The posbench command line: each command parses, calls the library, prints."""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console
from rich.markup import escape

from .. import __version__
from ..common import shutdown_distributed
from ..errors import Interrupted, PosbenchError

app = typer.Typer(
    name="posbench",
    help="Train tiny GPTs with interchangeable position encodings and test whether they extrapolate.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
# Printed into a file or a pipe (a cluster job's log), rich would fold tables to 80 columns and drop
# the widest ones; a log gets this width instead, unless COLUMNS says otherwise.
LOG_WIDTH = 160


def _console(stream) -> Console:
    to_log = not stream.isatty() and not os.environ.get("COLUMNS")
    # no emoji codes: a label such as hf:llama followed by ": " would print as one
    return Console(stderr=stream is sys.stderr, width=LOG_WIDTH if to_log else None, emoji=False)


console = _console(sys.stdout)
err_console = _console(sys.stderr)


def _version(value: bool) -> None:
    if value:
        console.print(f"posbench {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(False, "--version", callback=_version, is_eager=True, help="Print the version."),
) -> None:
    """Train short, test long: which position encoding extrapolates?"""


# each module adds its command(s) to `app` when imported
from . import bench, compare, data, evaluate, heads, sample, tasks, train  # noqa: E402, F401


def main() -> None:
    """Entry point: user errors become one red line and exit code 2 (POSBENCH_DEBUG=1: traceback)."""
    try:
        app()
    except PosbenchError as e:
        if os.environ.get("POSBENCH_DEBUG"):
            raise
        err_console.print(f"[bold red]error:[/] {escape(str(e))}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except Interrupted as e:
        err_console.print(
            f"[yellow]interrupted at step {e.step}; checkpoint saved.[/] Resume with: "
            f"posbench train --resume {e.run_dir}", highlight=False, soft_wrap=True)
        sys.exit(130)
    finally:
        shutdown_distributed()  # every torchrun rank, on every exit path
