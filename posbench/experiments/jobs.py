"""Independent runs side by side (`--jobs N` on compare and tasks): N worker processes, each with its
share of the CPU threads. With one job, each runs here in turn with its progress bars; with more, each
worker's bars travel over a queue to this process, which draws them in the same live display.
By default two jobs on a CPU with two threads or more (the README demo: 1.21x faster than one at a
time on 2 cores, docs/benchmarks.md), one elsewhere; POSBENCH_JOBS sets that default.

Failures stay per job (one method's error is its row's, the others go on); Ctrl-C reaches every
worker, whose training saves its checkpoint as it does alone, then Interrupted is raised here; each
run folder keeps its own lock, so a rerun resumes every run where it stopped."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from typing import Any

import torch
from rich.progress import Progress

from ..common import resolve_device
from ..errors import Interrupted, PosbenchError

# work(item, progress): one job; progress is the live display to add bars to (in a worker, a
# ForwardedProgress), or None (run quietly). Returns what the job produced; an exception it raises
# becomes that job's outcome.
Work = Callable[[Any, Progress | None], Any]


def resolve_jobs(jobs: int | None, device: str) -> int:
    """--jobs as given, or its default (None): POSBENCH_JOBS if set, else 2 on a CPU with two threads or
    more and 1 elsewhere (a GPU runs one model at a time; a lone thread has nothing to share)."""
    if jobs is None:
        env = os.environ.get("POSBENCH_JOBS")
        if env is not None:
            if not env.strip().isdigit() or int(env) < 1:
                raise PosbenchError(f"POSBENCH_JOBS must be a positive whole number, got {env!r}")
            jobs = int(env)
        else:
            jobs = 2 if resolve_device(device).type == "cpu" and torch.get_num_threads() >= 2 else 1
    if jobs < 1:
        raise PosbenchError(f"--jobs must be at least 1, got {jobs}")
    return jobs


def threads_per_job(jobs: int) -> int:
    """Each worker's share of this process's CPU threads (at least one)."""
    return max(1, torch.get_num_threads() // jobs)


def run_jobs(work: Work, items: Sequence, jobs: int, on_done: Callable[[int, Any], None],
             progress: Progress | None = None, on_start: Callable[[int], None] | None = None,
             then: Work | None = None) -> None:
    """on_done(k, outcome) for every items[k] as it finishes: work's result, or the Exception it
    raised (Interrupted is raised, never handed over). `work` and the items must pickle when jobs > 1
    (a module-level function or a functools.partial of one). on_start(k): before job k, one job at a time.
    then: a second stage, then(work's result, progress), whose result on_done gets instead; side by side
    it is a job of its own, queued when the first stage ends, so a worker that has run out of first
    stages takes the second stages of the others (7 runs on 2 workers: the idle one evaluates what the
    busy one trained, instead of waiting for 4 trainings and 4 evaluations back to back)."""
    if jobs <= 1 or len(items) <= 1:
        for k, item in enumerate(items):
            if on_start is not None:
                on_start(k)
            outcome = _attempt(work, item, progress)
            if then is not None and not isinstance(outcome, Exception):
                outcome = _attempt(then, outcome, progress)
            on_done(k, outcome)
        return
    context = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    bars = context.Queue() if progress is not None else None  # the workers' progress events
    drawer = threading.Thread(target=_draw, args=(bars, progress), daemon=True) if bars is not None else None
    if drawer is not None:
        drawer.start()
    try:
        with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                                 initargs=(threads_per_job(jobs), bars)) as pool:
            futures = {pool.submit(_in_worker, work, item): (k, work) for k, item in enumerate(items)}
            try:
                running = set(futures)
                while running:
                    finished, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in finished:
                        (k, stage), outcome = futures[future], future.result()
                        if stage is work and then is not None and not isinstance(outcome, Exception):
                            second = pool.submit(_in_worker, then, outcome)  # queued behind the first stages
                            futures[second] = (k, then)
                            running.add(second)
                        else:
                            on_done(k, outcome)
            except KeyboardInterrupt:
                pool.shutdown(wait=True, cancel_futures=True)  # the running jobs save their checkpoints first
                stopped = [f.exception() for f in futures if f.done() and not f.cancelled()]
                raise next((e for e in stopped if isinstance(e, Interrupted)), None) or KeyboardInterrupt() from None
    finally:
        if drawer is not None:  # the workers have exited, their events are all queued: draw them, then stop
            bars.put(None)
            drawer.join()


def _attempt(work: Work, item, progress: Progress | None):
    try:
        return work(item, progress)
    except Interrupted:
        raise
    except Exception as e:  # one failing job (NaN, out of memory, a bug) must not cost the others
        return e


class ForwardedProgress:
    """A worker's stand-in for the live display: the calls runs make on a Progress (add_task, update,
    advance) are sent to the parent process, which draws them (_draw)."""

    def __init__(self, events) -> None:
        self.events, self.tasks = events, 0

    def add_task(self, description: str, **fields) -> tuple[int, int]:
        self.tasks += 1
        task = (os.getpid(), self.tasks)  # unique across the workers
        self.events.put(("add", task, description, fields))
        return task

    def update(self, task: tuple[int, int], **fields) -> None:
        self.events.put(("update", task, fields))

    def advance(self, task: tuple[int, int], advance: float = 1) -> None:
        self.events.put(("advance", task, advance))


def _draw(events, progress: Progress) -> None:
    """Apply the workers' progress events to the live display until None arrives."""
    tasks = {}
    while (event := events.get()) is not None:
        kind, task, *args = event
        if kind == "add":
            tasks[task] = progress.add_task(args[0], **args[1])
        elif kind == "update":
            progress.update(tasks[task], **args[0])
        else:
            progress.advance(tasks[task], args[0])


_forwarded: ForwardedProgress | None = None  # this worker's, when the parent draws progress


def _start_worker(threads: int, events) -> None:
    global _forwarded
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an idle worker outlives Ctrl-C; a busy one saves (below)
    _forwarded = ForwardedProgress(events) if events is not None else None


def _in_worker(work: Work, item):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: the training loop saves a checkpoint
    try:
        return _attempt(work, item, _forwarded)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
