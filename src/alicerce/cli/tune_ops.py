"""`alicerce tune eval` (an adapter against the base or another adapter, on its held-out
rows) and `alicerce tune schedule` (continuous tuning from feedback, one round a call)."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Annotated

import typer

from alicerce.cli.common import HomeOpt, JsonOpt, emit, open_home
from alicerce.cli.tune import _Progress, compared, tune_app
from alicerce.durations import duration_s
from alicerce.tune.config import TuneConfig


@tune_app.command("eval")
def tune_eval(ref: Annotated[str, typer.Argument(help="The adapter: NAME@N or NAME@LABEL")],
              against: Annotated[str | None, typer.Option(
                  help="Another adapter on the same base [production, else the base]")
              ] = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """Both answer the rows the adapter's training held out; the answer metrics side by
    side, both stored as evaluation runs (alicerce eval compare / gate read them)."""
    with open_home(home) as alc:
        compared(alc, ref, against, as_json)


@tune_app.command("schedule")
def tune_schedule(
    name: Annotated[str, typer.Option("--name", help="The adapter to keep tuning.")],
    app: Annotated[str | None, typer.Option(help="Only this app's feedback.")] = None,
    base: Annotated[str | None, typer.Option(help="[the last adapter's base, the app's "
                                                  "model, or the generator]")] = None,
    min_new: Annotated[int, typer.Option(help="Train only when this many new rows of "
                                              "feedback arrived.")] = 20,
    epochs: float = 3.0, lr: Annotated[float, typer.Option("--lr")] = 2e-4,
    every: Annotated[str | None, typer.Option(
        help="Keep running: a round every DURATION (e.g. 1d, 6h); once when not given.")
    ] = None, home: HomeOpt = None, as_json: JsonOpt = False) -> None:
    """A round of continuous tuning: new feedback -> train -> held-out gate -> staging.
    Never promotes to production by itself."""
    wait = duration_s(every, "--every") if every else None
    cfg = TuneConfig(epochs=epochs, learning_rate=lr)
    while True:
        with open_home(home) as alc:
            done = alc.tune_schedule(name, app=app, base=base, config=cfg, min_new=min_new,
                                     progress=_Progress(name, quiet=as_json))
        if as_json:
            emit(asdict(done))
        else:
            typer.echo(f"{done.state}: {done.reason}")
        if wait is None:
            return
        time.sleep(wait)
