"""Command line: parse arguments, call the core API, format the result. Nothing else."""

from __future__ import annotations

import sys

import typer

from alicerce.cli import (  # noqa: F401  (they register their commands)
    answers,
    apps,
    chains,
    datasets,
    evals,
    explain,
    fairness,
    guards,
    kb,
    monitor,
    prompts,
    serving,
    tune,
    tune_data,
    tune_ops,
)
from alicerce.cli.common import app
from alicerce.errors import AlicerceError

__all__ = ["app", "main"]


def main() -> None:
    """Entry point: AlicerceErrors become one line on stderr and exit status 2."""
    try:
        app()
    except AlicerceError as exc:
        typer.echo(f"error: {exc.message}" + (f"\nhint: {exc.hint}" if exc.hint else ""),
                   err=True)
        sys.exit(2)
