"""--jobs: independent runs side by side in worker processes give the same results as one at a time;
a failing job is its own outcome, the others go on; an interrupted one stops the command with its run."""

import json
import pickle
import time
from pathlib import Path

import pytest
import torch
from rich.progress import Progress

from posbench.errors import Interrupted, PosbenchError
from posbench.experiments.jobs import resolve_jobs, run_jobs

from .helpers import run_cli
from .test_compare import tiny_preset  # noqa: F401  (fixtures)
from .test_tasks import tiny_tasks  # noqa: F401


def square_or_fail(item, progress):
    """A job for the workers (module level: it pickles by reference)."""
    if item == 3:
        raise PosbenchError("three is refused")
    if item == "stop":
        raise Interrupted(Path("runs/x"), 7)
    return item * item


def test_every_job_finishes_and_a_failing_one_is_its_own_outcome():
    outcomes = {}
    run_jobs(square_or_fail, [1, 2, 3, 4], 2, outcomes.__setitem__)
    assert sorted(outcomes) == [0, 1, 2, 3]
    assert [outcomes[k] for k in (0, 1, 3)] == [1, 4, 16]
    assert isinstance(outcomes[2], PosbenchError) and str(outcomes[2]) == "three is refused"


def test_an_interrupted_job_stops_the_whole_with_its_run_and_step():
    with pytest.raises(Interrupted) as stopped:
        run_jobs(square_or_fail, [1, "stop"], 2, lambda k, outcome: None)
    assert (stopped.value.run_dir, stopped.value.step) == (Path("runs/x"), 7)
    again = pickle.loads(pickle.dumps(Interrupted(Path("a"), 3)))
    assert (again.run_dir, again.step) == (Path("a"), 3)


def count_to(item, progress):
    """A job that shows a bar: `item` steps, then a description of its own."""
    task = progress.add_task(f"job {item}", total=item)
    for _ in range(item):
        progress.advance(task, 1)
    progress.update(task, description=f"job {item} done")
    return item


def test_workers_bars_are_drawn_in_the_parents_display():
    display = Progress(disable=True)
    run_jobs(count_to, [3, 5, 2], 2, lambda k, outcome: None, display)
    bars = sorted((t.description, t.completed, t.total) for t in display.tasks)
    assert bars == [("job 2 done", 2, 2), ("job 3 done", 3, 3), ("job 5 done", 5, 5)]


def test_workers_run_quietly_without_a_display():
    outcomes = {}
    run_jobs(square_or_fail, [1, 2], 2, outcomes.__setitem__)  # progress None: no queue, nothing drawn
    assert outcomes == {0: 1, 1: 4}


@pytest.mark.parametrize("env, device, threads, expected", [
    (None, "cpu", 2, 2), (None, "cpu", 1, 1), ("3", "cpu", 2, 3), ("1", "cpu", 8, 1)])
def test_the_default_number_of_jobs(monkeypatch, env, device, threads, expected):
    if env is None:
        monkeypatch.delenv("POSBENCH_JOBS", raising=False)
    else:
        monkeypatch.setenv("POSBENCH_JOBS", env)
    monkeypatch.setattr(torch, "get_num_threads", lambda: threads)
    assert resolve_jobs(None, device) == expected
    assert resolve_jobs(4, device) == 4  # an explicit --jobs wins


def test_bad_jobs_are_refused(monkeypatch, capsys, tmp_path):
    with pytest.raises(PosbenchError, match="--jobs must be at least 1, got 0"):
        resolve_jobs(0, "cpu")
    for command in ("compare", "tasks"):
        code, _, err = run_cli([command, "--jobs", "0", "--out", str(tmp_path / command)], capsys, monkeypatch)
        assert code == 2 and "--jobs must be at least 1, got 0" in err and not (tmp_path / command).exists()
    monkeypatch.setenv("POSBENCH_JOBS", "two")
    with pytest.raises(PosbenchError, match="POSBENCH_JOBS must be a positive whole number, got 'two'"):
        resolve_jobs(None, "cpu")


def first_stage(item, progress):
    """A first stage: job 2 leaves a mark as it starts, job 0 waits for that mark (so it holds one
    worker until job 2 has started on the other), job 3 fails."""
    folder, k = item
    if k == 3:
        raise PosbenchError("three is refused")
    if k == 2:
        (folder / "2 started").touch()
    deadline = time.monotonic() + 60
    while k == 0 and not (folder / "2 started").exists():
        if time.monotonic() > deadline:
            raise TimeoutError("job 2 never started")
        time.sleep(0.01)
    return item


def second_stage(first, progress):
    """A second stage: the first's job, and whether job 2 had started by now."""
    folder, k = first
    return k, (folder / "2 started").exists()


@pytest.mark.parametrize("jobs", [1, 2])
def test_a_second_stage_takes_the_first_ones_result_and_a_failure_skips_it(jobs, tmp_path):
    outcomes = {}
    items = [(tmp_path, k) for k in (1, 2, 3, 4)]  # job 0 would wait for job 2 forever one at a time
    run_jobs(first_stage, items, jobs, outcomes.__setitem__, then=second_stage)
    assert isinstance(outcomes[2], PosbenchError) and str(outcomes[2]) == "three is refused"
    assert [outcomes[i][0] for i in (0, 1, 3)] == [1, 2, 4]
    if jobs == 1:  # one at a time, each job's stages back to back: job 1's second before job 2 started
        assert outcomes[0] == (1, False)


def test_side_by_side_second_stages_queue_behind_the_first_stages(tmp_path):
    """Two workers, job 0 holding one until job 2 starts: the other runs job 1, then job 2's first stage
    before job 1's second (a worker that has run out of trainings evaluates the others' runs)."""
    outcomes = {}
    run_jobs(first_stage, [(tmp_path, k) for k in range(3)], 2, outcomes.__setitem__, then=second_stage)
    assert outcomes == {0: (0, True), 1: (1, True), 2: (2, True)}


def test_one_job_runs_here_in_order_with_the_progress_given():
    seen = []
    run_jobs(lambda item, progress: seen.append((item, progress)), ["a", "b"], 1, lambda k, o: None, progress="bar")
    assert seen == [("a", "bar"), ("b", "bar")]


def test_compare_with_two_jobs_gives_one_jobs_numbers(tiny_preset, corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    tables = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        args = ["compare", "--pos", "alibi,rotary", "--preset", "tiny", "--data", corpus, "--out", str(out),
                "--device", "cpu", "--quiet", "--jobs", str(jobs)]
        code, _, _ = run_cli(args, capsys, monkeypatch)
        assert code in (0, None)
        rows = json.loads((out / "results.json").read_text())["runs"]
        tables[jobs] = {(row["label"], r["length"]): r["ppl"] for row in rows for r in row["results"]}
    assert list(tables[1]) == list(tables[2]), "the same rows, in the order asked"
    # the workers train on one thread, here two: sums may differ in their last bits, no more
    assert tables[2] == pytest.approx(tables[1], rel=1e-3)


def test_compare_with_two_jobs_records_a_failing_method_and_finishes_the_other(tiny_preset, corpus, tmp_path,  # noqa: F811
                                                                               capsys, monkeypatch):
    out = tmp_path / "cmp"
    (out / "rotary").mkdir(parents=True)
    (out / "rotary" / "notes.txt").write_text("not a run")  # a folder that is not a run: rotary fails
    args = ["compare", "--pos", "alibi,rotary", "--preset", "tiny", "--data", corpus, "--out", str(out),
            "--device", "cpu", "--quiet", "--jobs", "2"]
    code, _, _ = run_cli(args, capsys, monkeypatch)
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == ["alibi"]
    assert [f["label"] for f in results["failures"]] == ["rotary"] and "is not a posbench run" in \
        results["failures"][0]["error"]


def test_tasks_with_two_jobs_score_what_one_job_scores_in_the_same_order(tiny_tasks, tmp_path, monkeypatch,  # noqa: F811
                                                                          capsys):
    runs = {}
    for jobs in (1, 2):
        out = tmp_path / f"jobs{jobs}"
        args = ["tasks", "--task", "copy", "--pos", "none,alibi,rotary", "--preset", "tiny", "--out", str(out),
                "--device", "cpu", "--quiet", "--jobs", str(jobs)]
        code, _, _ = run_cli(args, capsys, monkeypatch)
        assert code in (0, None)
        runs[jobs] = json.loads((out / "results.json").read_text())["runs"]
    assert [r["pos"] for r in runs[2]] == [r["pos"] for r in runs[1]] == ["none", "alibi", "rotary"]
    # exact match counts whole instances: a last-bit difference in training rarely flips one; token accuracy
    # is compared loosely for the same reason
    for one, two in zip(runs[1], runs[2], strict=True):
        assert [r["token_accuracy"] for r in two["results"]] == pytest.approx(
            [r["token_accuracy"] for r in one["results"]], abs=0.05)
