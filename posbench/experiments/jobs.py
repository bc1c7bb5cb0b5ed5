"""Independent runs side by side (`--jobs N` on compare and tasks): N worker processes, each with its
share of the CPU threads. With one job, each runs here in turn with its progress bars, as before the
option existed; with more, the workers run quietly and each finished job advances the overall bar.

Failures stay per job (one method's error is its row's, the others go on); Ctrl-C reaches every
worker, whose training saves its checkpoint as it does alone, then Interrupted is raised here; each
run folder keeps its own lock, so a rerun resumes every run where it stopped."""

from __future__ import annotations

import multiprocessing
import signal
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from typing import Any

import torch
from rich.progress import Progress

from ..errors import Interrupted

# work(item, progress): one job; progress is the live display to add bars to, or None in a worker
# (run quietly). Returns what the job produced; an exception it raises becomes that job's outcome.
Work = Callable[[Any, Progress | None], Any]


def threads_per_job(jobs: int) -> int:
    """Each worker's share of this process's CPU threads (at least one)."""
    return max(1, torch.get_num_threads() // jobs)


def run_jobs(work: Work, items: Sequence, jobs: int, on_done: Callable[[int, Any], None],
             progress: Progress | None = None, on_start: Callable[[int], None] | None = None) -> None:
    """on_done(k, outcome) for every items[k] as it finishes: work's result, or the Exception it
    raised (Interrupted is raised, never handed over). `work` and the items must pickle when jobs > 1
    (a module-level function or a functools.partial of one). on_start(k): before job k, one job at a time."""
    if jobs <= 1 or len(items) <= 1:
        for k, item in enumerate(items):
            if on_start is not None:
                on_start(k)
            on_done(k, _attempt(work, item, progress))
        return
    context = multiprocessing.get_context("spawn")  # fork would copy this process's torch thread pools
    with ProcessPoolExecutor(jobs, mp_context=context, initializer=_start_worker,
                             initargs=(threads_per_job(jobs),)) as pool:
        futures = {pool.submit(_in_worker, work, item): k for k, item in enumerate(items)}
        try:
            for future in as_completed(futures):
                on_done(futures[future], future.result())
        except KeyboardInterrupt:
            pool.shutdown(wait=True, cancel_futures=True)  # the running jobs save their checkpoints first
            stopped = [f.exception() for f in futures if f.done() and not f.cancelled()]
            raise next((e for e in stopped if isinstance(e, Interrupted)), None) or KeyboardInterrupt() from None


def _attempt(work: Work, item, progress: Progress | None):
    try:
        return work(item, progress)
    except Interrupted:
        raise
    except Exception as e:  # one failing job (NaN, out of memory, a bug) must not cost the others
        return e


def _start_worker(threads: int) -> None:
    torch.set_num_threads(threads)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # an idle worker outlives Ctrl-C; a busy one saves (below)


def _in_worker(work: Work, item):
    signal.signal(signal.SIGINT, signal.default_int_handler)  # Ctrl-C: the training loop saves a checkpoint
    try:
        return _attempt(work, item, None)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
