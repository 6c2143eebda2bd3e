"""The `saseg` command line: thin wrappers over the library API."""

from __future__ import annotations

import logging
from typing import Optional

import typer
from typing_extensions import Annotated

from . import __version__
from .errors import SasegError

app = typer.Typer(
    name="saseg",
    help="Surprise Adequacy for semantic segmentation: find the frames worth labelling.",
    context_settings={"help_option_names": ["-h", "--help"]},
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)


def _version(value: bool):
    if value:
        typer.echo(f"saseg {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[Optional[bool], typer.Option("--version", callback=_version, is_eager=True,
                                                    help="Print the version and exit.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log progress details.")] = False,
):
    """Score frames by surprise, evaluate against labels, and plan what to label."""
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")


def run() -> None:
    """Entry point that turns saseg errors into one line and exit code 1."""
    try:
        app(standalone_mode=False)
    except SasegError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise SystemExit(1)
