"""Faults during a save: a kill half-way through writing checkpoint.pt or model.safetensors leaves the
previous file loadable and the run resumes to the same weights as an uninterrupted one; a full disk
is one line, keeps the previous checkpoint and leaves no temporary file."""

import errno
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from posbench import load_run
from posbench.errors import PosbenchError
from posbench.fileio import atomic_write
from posbench.runs import folder as runs_module
from posbench.train import train

from .helpers import run_cli, tiny_train

ROOT = Path(__file__).resolve().parents[1]
# trains tiny_train's run (6 steps, a save every 3) and dies by SIGKILL half-way through the second
# write of one file: the data is half on disk in the temporary file, as a real kill would leave it
DIE_IN_SAVE = """
import os, signal, sys, torch
from pathlib import Path
from posbench.runs import folder as runs
from posbench.train import train
from tests.helpers import tiny_train
target, corpus, out = sys.argv[1:4]
real, writes = runs.atomic_write, []
def dying(path, content):
    if path.name == target:
        writes.append(path)
        if len(writes) == 2:
            def half_then_die(tmp):
                if callable(content):
                    content(tmp)
                else:
                    tmp.write_bytes(content)
                os.truncate(tmp, tmp.stat().st_size // 2)
                os.kill(os.getpid(), signal.SIGKILL)
            return real(path, half_then_die)
    return real(path, content)
runs.atomic_write = dying
torch.set_num_threads(1)
train(*tiny_train(corpus), out=Path(out), show_progress=False)
"""


def temp_files(run):
    return [p.name for p in run.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.parametrize("target,resumes_from", [("checkpoint.pt", 3), ("model.safetensors", 6)])
def test_a_kill_inside_a_save_keeps_the_previous_file_and_resume_works(target, resumes_from, corpus, tmp_path):
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1",
           "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    child = subprocess.run([sys.executable, "-c", DIE_IN_SAVE, target, corpus, str(out)], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=300)
    assert child.returncode == -signal.SIGKILL, child.stderr
    assert temp_files(out), "killed inside the write, a half-written temporary file left"
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == resumes_from, "previous checkpoint"
    load_run(out)  # the weights load: the previous model.safetensors, whole

    torch.set_num_threads(1)  # as the child: bitwise equal weights
    resumed = train(*tiny_train(corpus), out=out, show_progress=False)
    assert resumed.resumed_from == resumes_from
    assert not temp_files(out), "the next writer sweeps the dead one's temporary file"
    whole = train(*tiny_train(corpus), out=tmp_path / "whole", show_progress=False).run_dir
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_full_disk_is_one_line_and_keeps_the_previous_checkpoint(corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "run"
    real_save, saves = torch.save, []

    def disk_fills_on_the_second_checkpoint(state, f):
        saves.append(state["step"])
        if len(saves) == 2:
            f.write(b"half a checkpoint")
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_save(state, f)

    monkeypatch.setattr(runs_module.torch, "save", disk_fills_on_the_second_checkpoint)
    args = ["train", "--data", corpus, "--layers", "1", "--heads", "2", "--dim", "16", "--tokenizer", "bytes",
            "--seq-len", "16", "--batch-size", "4", "--steps", "6", "--save-every", "3", "--device", "cpu",
            "--out", str(out)]
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2 and err.count("\n") == 1 and "Traceback" not in err, err
    assert f"no space left on device while writing {out / 'checkpoint.pt'}" in err, err
    assert "the previous checkpoint.pt is kept" in err, err
    assert torch.load(out / "checkpoint.pt", weights_only=False)["step"] == 3
    assert not temp_files(out), "no temporary file left behind"

    monkeypatch.setattr(runs_module.torch, "save", real_save)  # space freed: the same command resumes
    code, out_text, err = run_cli(args, capsys, monkeypatch)
    assert code in (0, None), err
    assert "resumed from step 3" in out_text


def test_a_full_disk_on_a_first_write_says_nothing_was_written(tmp_path, monkeypatch):
    def full(tmp):
        tmp.write_bytes(b"par")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(PosbenchError, match=r"while writing .*results.json; results.json was not written"):
        atomic_write(tmp_path / "results.json", full)
    assert list(tmp_path.iterdir()) == []
