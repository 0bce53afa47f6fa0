"""Progress on the terminal while a user waits: a spinner with the stage and the seconds so
far, or a bar with counts and an ETA. Drawn on stderr with rich, and only when stderr is a
terminal: pipes, scripts and `--json` get clean output."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def interactive() -> bool:
    return sys.stderr.isatty()


class Status:
    """A spinner's line; `say` changes what it says. Does nothing off a terminal."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._task = progress.add_task("", total=None) if progress else None

    def say(self, text: str) -> None:
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, description=text)


@contextmanager
def status(text: str, enabled: bool = True) -> Iterator[Status]:
    if not (enabled and interactive()):
        yield Status(None)
        return
    with Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                  console=Console(stderr=True), transient=True) as progress:
        s = Status(progress)
        s.say(text)
        yield s


class Bar:
    """A callback (done, total) drawing a bar with an ETA from its first call until done
    reaches total; a no-op off a terminal. Shaped for the core's `progress=` arguments."""

    def __init__(self, label: str, enabled: bool = True) -> None:
        self._label, self._on = label, enabled and interactive()
        self._progress: Progress | None = None
        self._task: TaskID | None = None

    def __call__(self, done: int, total: int) -> None:
        if not self._on:
            return
        if self._progress is None:
            self._progress = Progress(
                SpinnerColumn(), TextColumn(self._label), BarColumn(), MofNCompleteColumn(),
                TimeElapsedColumn(), TimeRemainingColumn(), console=Console(stderr=True),
                transient=True)
            self._progress.start()
            self._task = self._progress.add_task(self._label, total=total or None)
        assert self._task is not None
        self._progress.update(self._task, completed=done, total=total or None)
        if total and done >= total:
            self.close()

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
