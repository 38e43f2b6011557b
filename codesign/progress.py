"""One progress bar for a build's named steps, shared by the CLI and ``codesign.build``."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

StepCallback = Callable[[str, int, int], None]


def _wanted(console) -> bool:
    """Show a bar where a person watches: a terminal or a Jupyter notebook."""
    return console.is_terminal or console.is_jupyter


@contextmanager
def _rich_bar(progress, console, counts: str):
    """``(callable, None)`` when the caller passed its own callback, ``(None, None)`` when no
    bar is wanted, else ``(None, bar)``: an open rich Progress whose count column reads
    ``counts``."""
    if callable(progress):
        yield progress, None
        return
    from rich.console import Console

    console = console or Console(stderr=True)
    if progress is False or (progress is None and not _wanted(console)):
        yield None, None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    columns = (
        TextColumn("[bold]{task.description:<10}"),
        BarColumn(),
        TextColumn(counts),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console, transient=False) as bar:
        yield None, bar


@contextmanager
def step_bar(total: int, progress=None, console=None) -> Iterator[StepCallback | None]:
    """Yield a ``callback(step_name, index, total)`` for ``total`` steps.

    ``progress``: ``None`` shows a rich bar on stderr when a person is watching (terminal
    or notebook), ``True`` always, ``False`` never; a callable is used as it is.
    """
    with _rich_bar(progress, console, "{task.completed}/{task.total}") as (given, bar):
        if bar is None:
            yield given
            return
        job = bar.add_task("build", total=total)

        def update(name: str, index: int, _total: int) -> None:
            bar.update(job, description=name, completed=index)

        yield update
        bar.update(job, description="done", completed=total)


JobCallback = Callable[[str, int, int, int, int], None]

JOB_COUNTS = (
    "{task.completed}/{task.total} done, {task.fields[running]} running, "
    "{task.fields[failed]} failed"
)


@contextmanager
def job_bar(progress=None, console=None) -> Iterator[JobCallback | None]:
    """Yield ``callback(stage, done, running, failed, total)`` for batches of jobs (the
    search's blocks, the verifications): one bar per stage with its running and failed
    counts. ``progress`` as for ``step_bar``."""
    with _rich_bar(progress, console, JOB_COUNTS) as (given, bar):
        if bar is None:
            yield given
            return
        stages: dict[str, int] = {}

        def update(stage: str, done: int, running: int, failed: int, total: int) -> None:
            if stage not in stages:
                stages[stage] = bar.add_task(stage, total=total, running=0, failed=0)
            bar.update(stages[stage], completed=done, running=running, failed=failed)

        yield update
