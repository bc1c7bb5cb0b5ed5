"""Runs survive faults: SIGKILL mid-run then resume is bitwise exact; Ctrl-C saves and exits 130;
a crash during a save leaves the previous file intact."""

import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from posbench.runs import atomic_write
from posbench.train import train

from .helpers import tiny_train

STEPS = 400


def cli_args(corpus, out):
    return [sys.executable, "-m", "posbench", "train", "--data", corpus, "--tokenizer", "bytes",
            "--layers", "1", "--heads", "2", "--dim", "16", "--seq-len", "16", "--batch-size", "4",
            "--steps", str(STEPS), "--save-every", "5", "--eval-every", "50", "--device", "cpu",
            "--out", str(out)]


def start_and_wait_for_checkpoint(args, out):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    deadline = time.time() + 60
    while not (out / "checkpoint.pt").exists():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, "no checkpoint within 60 s"
        time.sleep(0.02)
    return proc


def test_sigkill_then_resume_is_bitwise_exact(corpus, tmp_path):
    out = tmp_path / "killed"
    proc = start_and_wait_for_checkpoint(cli_args(corpus, out), out)
    time.sleep(0.3)  # let it run past the first checkpoint, into the middle of the run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "killed before the end"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    resumed = subprocess.run([sys.executable, "-m", "posbench", "train", "--resume", str(out)],
                             capture_output=True, text=True, env=env)
    assert resumed.returncode == 0, resumed.stderr
    assert "resumed from step" in resumed.stdout

    torch.set_num_threads(1)
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=STEPS, save_every=5, eval_every=50, log_every=10)
    model_cfg.n_layer, model_cfg.n_head, model_cfg.d_model = 1, 2, 16
    cfg.batch_size, cfg.warmup, cfg.eval_tokens, cfg.lr = 4, 50, 16384, 3e-3
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False).run_dir
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_ctrl_c_saves_and_exits_130(corpus, tmp_path):
    out = tmp_path / "interrupted"
    proc = start_and_wait_for_checkpoint(cli_args(corpus, out), out)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"posbench train --resume {out}" in err
    assert "Traceback" not in err


def test_crash_during_save_keeps_the_previous_file(tmp_path):
    target = tmp_path / "checkpoint.pt"
    atomic_write(target, lambda tmp: tmp.write_bytes(b"good"))

    def torn(tmp):
        tmp.write_bytes(b"half")
        raise OSError("disk full")

    with pytest.raises(OSError):
        atomic_write(target, torn)
    assert target.read_bytes() == b"good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"], "no temporary file left behind"
