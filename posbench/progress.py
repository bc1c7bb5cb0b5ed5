"""One progress-bar layout for every long job, so tasks of training, evaluation and comparison can
share a single live display (rich allows one at a time).

Where the console is not a terminal (a log file, nohup, CI, a cluster job) a live bar cannot redraw
and rich would show it only at the end; there the same tasks print plain lines instead (LineProgress)."""

from __future__ import annotations

import datetime

from rich import get_console
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

LINE_EVERY_S = 10.0  # a progress line at most this often...
LINE_EVERY_FRACTION = 0.01  # ...and at most once per this much of a job: a log gets <= ~100 lines per job


def make_progress(console: Console | None = None, disable: bool = False) -> Progress:
    """A live bar on a terminal; periodic plain lines (LineProgress) anywhere else."""
    console = console or get_console()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TextColumn("eta"), TimeRemainingColumn())
    if console.is_terminal or disable:
        return Progress(*columns, console=console, disable=disable)
    return LineProgress(*columns, console=console)


class LineProgress(Progress):
    """A Progress that draws no live display but prints one line per task when it starts, when it
    finishes, and in between once LINE_EVERY_S seconds and LINE_EVERY_FRACTION of its total have
    both passed since its last line (the rarer of the two). A line reads e.g.
    `train alibi · loss 3.214 · 48,120 tok/s · 120/600 steps (20%) · elapsed 0:00:12 · eta 0:00:48`."""

    def __init__(self, *columns, **kwargs) -> None:
        super().__init__(*columns, **{**kwargs, "disable": True})  # disable: no Live; the lines are ours
        self.every_s, self.every_fraction = LINE_EVERY_S, LINE_EVERY_FRACTION
        self._last: dict[TaskID, tuple[float, float]] = {}  # task -> (time, completed) of its last line
        self._finished: set[TaskID] = set()

    def add_task(self, description: str, *args, **kwargs) -> TaskID:
        task_id = super().add_task(description, *args, **kwargs)
        self._print(task_id)
        return task_id

    def update(self, task_id: TaskID, **kwargs) -> None:
        super().update(task_id, **kwargs)
        self._maybe_print(task_id)

    def advance(self, task_id: TaskID, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._maybe_print(task_id)

    def _maybe_print(self, task_id: TaskID) -> None:
        if task_id in self._finished:
            return
        task = self._tasks[task_id]
        last_time, last_done = self._last[task_id]
        due = self.get_time() - last_time >= self.every_s and (
            task.total is None or task.completed - last_done >= self.every_fraction * task.total)
        if due or task.finished:
            self._print(task_id)

    def _print(self, task_id: TaskID) -> None:
        task = self._tasks[task_id]
        self._last[task_id] = (self.get_time(), task.completed)
        if task.finished:
            self._finished.add(task_id)
        self.console.print(line(task), highlight=False, soft_wrap=True)


def line(task: Task) -> str:
    """One task's state as a line: description, count of total with its unit, elapsed, eta."""
    unit = f" {task.fields['unit']}" if task.fields.get("unit") else ""
    if task.total:
        count = f"{task.completed:,.0f}/{task.total:,.0f}{unit} ({100 * task.completed / task.total:.0f}%)"
    else:
        count = f"{task.completed:,.0f}{unit}"
    parts = [task.description, count, f"elapsed {_clock(task.elapsed)}"]
    if not task.finished:
        parts.append(f"eta {_clock(task.time_remaining)}")
    return " · ".join(parts)


def _clock(seconds: float | None) -> str:
    return "?" if seconds is None else str(datetime.timedelta(seconds=int(seconds)))
