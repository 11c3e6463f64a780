"""The `spinegrade` command line: a thin Typer layer over the Python API.

Every command parses its arguments, calls one API function and prints the result. Expected failures
(`SpinegradeError`) are printed as one line `error: ...` with exit status 2, never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console

from spinegrade.errors import SpinegradeError

app = typer.Typer(
    name="spinegrade",
    help="Lumbar spine degeneration grading from MRI (RSNA 2024 LSDC): localise, then grade.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
console = Console()
err_console = Console(stderr=True)

EXIT_USAGE_ERROR = 2


def main() -> None:
    """Console-script entry point: run the app, turning expected failures into one line."""
    try:
        app()
    except SpinegradeError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(EXIT_USAGE_ERROR)
    except KeyboardInterrupt:
        err_console.print("interrupted")
        sys.exit(130)


# Commands are added below, each a few lines over its API function.
