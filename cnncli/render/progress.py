"""The transient progress bar the commands show on stderr while they work (a terminal only)."""

from __future__ import annotations


class progress_bar:
    """A transient progress bar on stderr (nothing when quiet or not a terminal); yields a
    tick(n, total=None) function. With ``min_total`` the bar starts only when a tick announces a
    total above it, so a run of a handful of items stays silent; a bar whose total is reached
    goes, so the messages of the steps after it stand alone."""

    def __init__(self, quiet: bool, label: str, min_total: int | None = None):
        self.quiet, self.label, self.min_total, self.bar, self.task = quiet, label, min_total, None, None

    def __enter__(self):
        from cnncli.render.console import err_console

        if self.quiet or not err_console().is_terminal:  # rich leaves a blank line when not a terminal
            return None
        if self.min_total is None:
            self._start(None)
        return self._tick

    def _start(self, total):
        from rich.progress import (BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn,
                                   TimeElapsedColumn, TimeRemainingColumn)

        from cnncli.render.console import err_console, one_line

        # the label as text, escaped as every message (never markup, never a format string)
        columns = [SpinnerColumn(), TextColumn("{task.description}", markup=False), MofNCompleteColumn(), TimeElapsedColumn()]
        if total is not None:  # a known count: a bar and the time left
            columns[2:2] = [BarColumn()]
            columns.append(TimeRemainingColumn())
        self.bar = Progress(*columns, console=err_console(), transient=True)
        self.bar.start()
        self.task = self.bar.add_task(one_line(self.label), total=total)

    def _tick(self, n: int, total: int | None = None) -> None:
        if self.bar is None:
            if total is None or total <= self.min_total:
                return
            self._start(total)
        self.bar.advance(self.task, n)
        task = self.bar.tasks[0]
        if task.total is not None and task.completed >= task.total:  # its work done: the bar goes
            self.bar.stop()

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.stop()
        return False
