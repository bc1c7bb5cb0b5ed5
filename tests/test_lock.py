"""One writer per run folder (posbench/runs/lock.py): a second writer is refused at once with the holder's
pid, the first finishes untouched, SIGKILL frees the lock, a file system without locks gets a clear
line, and the lock file never counts as part of a run."""

import errno
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import posbench.cli  # noqa: F401  (imported now: the refusal is timed, not the imports)
from posbench.errors import PosbenchError
from posbench.runs import lock
from posbench.runs.config import RunConfig
from posbench.runs.folder import claim_run_dir
from posbench.runs.lock import LOCK_NAME, lock_run_dir
from posbench.train import train

from .helpers import run_cli, tiny_train

ROOT = Path(__file__).resolve().parents[1]
CLI_TINY = ["--layers", "1", "--heads", "2", "--dim", "16", "--tokenizer", "bytes", "--seq-len", "16",
            "--batch-size", "4", "--steps", "4", "--device", "cpu"]
# a training run in a child process whose steps each sleep `pause` seconds, so it holds the lock a while
SLOW_WRITER = """
import sys, time, torch
from pathlib import Path
from posbench.train import _Loop, train
from tests.helpers import tiny_train
corpus, out, steps, pause = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
step = _Loop.train_step
def slow_step(self, model):
    time.sleep(pause)
    step(self, model)
_Loop.train_step = slow_step
torch.set_num_threads(1)
train(*tiny_train(corpus, steps=steps), out=Path(out), show_progress=False)
"""


def start_slow_writer(corpus, out, steps, pause):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get(
        "PYTHONPATH", "")])}
    proc = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, corpus, str(out), str(steps), str(pause)],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (out / LOCK_NAME).is_file() or not (out / LOCK_NAME).read_text():  # locked, holder written
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "the writer took no lock within 120 s"
        time.sleep(0.02)
    return proc


def train_steps(run):
    return [r["step"] for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_a_second_writer_is_refused_at_once_and_the_first_finishes_untouched(corpus, tmp_path, capsys,
                                                                              monkeypatch):
    out = tmp_path / "run"
    first = start_slow_writer(corpus, out, steps=12, pause=0.15)
    started = time.perf_counter()
    code, _, err = run_cli(["train", "--data", corpus, *CLI_TINY, "--out", str(out)], capsys, monkeypatch)
    refused_in = time.perf_counter() - started
    assert code == 2, err
    assert f"pid {first.pid} on " in err and "is being written by another posbench" in err, err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert refused_in < 1.0, f"refused after {refused_in:.2f} s"
    _, first_err = first.communicate(timeout=300)
    assert first.returncode == 0, first_err

    assert train_steps(out) == list(range(1, 13)), "metrics of one run, in order"
    torch.set_num_threads(1)  # as the child: bitwise equal weights
    lone = train(*tiny_train(corpus, steps=12), out=tmp_path / "lone", show_progress=False).run_dir
    a, b = load_file(str(lone / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert (out / LOCK_NAME).read_text() == "", "released: the holder's line goes with the lock"


def test_sigkill_of_the_holder_frees_the_lock_for_a_resume(corpus, tmp_path):
    out = tmp_path / "run"
    holder = start_slow_writer(corpus, out, steps=30, pause=0.2)
    deadline = time.time() + 120
    while not (out / "checkpoint.pt").exists():
        assert holder.poll() is None and time.time() < deadline
        time.sleep(0.02)
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    resumed = train(*tiny_train(corpus, steps=30), out=out, show_progress=False)
    assert resumed.resumed_from > 0
    assert train_steps(out) == list(range(1, 31))


def test_a_writer_in_this_process_is_refused_too(corpus, tmp_path):
    run = tmp_path / "run"
    with lock_run_dir(run):
        with pytest.raises(PosbenchError, match=rf"{run} is being written by another posbench \(pid {os.getpid()}"):
            train(*tiny_train(corpus), out=run, show_progress=False)
    assert train(*tiny_train(corpus), out=run, show_progress=False).summary["steps"] == 6, "released on exit"
    with pytest.raises(ZeroDivisionError), lock_run_dir(run):
        raise ZeroDivisionError
    with lock_run_dir(run):  # released when the block raised
        pass


def test_a_file_system_without_locks_gets_a_clear_line(corpus, tmp_path, capsys, monkeypatch):
    def no_locks(fd, operation):
        raise OSError(errno.ENOLCK, os.strerror(errno.ENOLCK))

    monkeypatch.setattr(lock.fcntl, "flock", no_locks)
    out = tmp_path / "run"
    code, _, err = run_cli(["train", "--data", corpus, *CLI_TINY, "--out", str(out)], capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1, err
    assert "does not support file locks" in err and "POSBENCH_NO_LOCK=1" in err, err
    assert not (out / "config.json").exists(), "nothing written without the lock"
    monkeypatch.setenv("POSBENCH_NO_LOCK", "1")
    code, _, err = run_cli(["train", "--data", corpus, *CLI_TINY, "--out", str(out)], capsys, monkeypatch)
    assert code in (0, None), err
    assert (out / "summary.json").is_file()


def test_the_lock_file_is_not_part_of_the_run(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus)
    run = tmp_path / "run"
    run.mkdir()
    (run / LOCK_NAME).write_text("")  # left by an earlier writer: the folder still counts as empty
    config = train(model_cfg, cfg, out=run, show_progress=False).summary
    assert config["steps"] == 6
    other = json.loads((run / "config.json").read_text())
    other["train"]["lr"] = 0.5
    with lock_run_dir(run):  # --overwrite empties the folder but keeps the held lock file
        assert claim_run_dir(run, RunConfig.from_json(other), overwrite=True) is None
        assert [p.name for p in run.iterdir()] == [LOCK_NAME]
        with pytest.raises(PosbenchError, match="is being written"), lock_run_dir(run):
            pass


def test_a_second_writer_is_refused_before_the_corpus_is_read(corpus, tmp_path, monkeypatch):
    """The lock is taken before any work: reading and tokenising a corpus takes seconds."""
    import posbench.train as train_module

    def reads_the_corpus(*args, **kwargs):
        raise AssertionError("the corpus was read before the lock was taken")

    monkeypatch.setattr(train_module, "corpus_sampler", reads_the_corpus)
    run_dir = tmp_path / "held"
    with lock_run_dir(run_dir), pytest.raises(PosbenchError, match="is being written by"):
        train(*tiny_train(corpus), out=run_dir, show_progress=False)


def test_bad_input_found_after_locking_leaves_no_folder(tmp_path):
    out = tmp_path / "never"
    with pytest.raises(PosbenchError, match="does not exist"):
        train(*tiny_train(str(tmp_path / "missing.txt")), out=out, show_progress=False)
    assert not out.exists()
