"""Runs survive faults: SIGKILL mid-run then resume is bitwise exact; Ctrl-C saves and exits 130;
a crash during a save leaves the previous file intact."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file

from posbench import load_run
from posbench.runs.folder import atomic_write
from posbench.train import train

from .helpers import assert_trained, capture_saved_models, logits_on, tiny_train

STEPS = 400


def cli_args(corpus, out, save_every=5, steps=STEPS):
    return [sys.executable, "-m", "posbench", "train", "--data", corpus, "--tokenizer", "bytes",
            "--layers", "1", "--heads", "2", "--dim", "16", "--seq-len", "16", "--batch-size", "4",
            "--steps", str(steps), "--save-every", str(save_every), "--eval-every", "50", "--device", "cpu",
            "--out", str(out)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def default_sigint() -> None:
    """In the child: SIGINT back to its default, so Python turns it into KeyboardInterrupt even when
    this test runs under a shell that ignores SIGINT (a background job: `... &` in a script), which
    the child would otherwise inherit and never see Ctrl-C."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_and_wait_for(args, ready, what):
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV, text=True,
                            preexec_fn=default_sigint)
    deadline = time.time() + 60
    while not ready():
        assert proc.poll() is None, proc.communicate()
        assert time.time() < deadline, f"no {what} within 60 s"
        time.sleep(0.02)
    return proc


def logged_steps(out) -> list[int]:
    """Steps metrics.jsonl has logged a training loss for (complete lines only)."""
    path = out / "metrics.jsonl"
    text = path.read_text() if path.is_file() else ""
    complete = text[: text.rfind("\n") + 1]  # a line still being written is left out
    return [r["step"] for r in map(json.loads, complete.splitlines()) if "loss" in r]


def resume(out) -> int:
    """`posbench train --resume OUT` to the end; the step it resumed from."""
    resumed = subprocess.run([sys.executable, "-m", "posbench", "train", "--resume", str(out)],
                             capture_output=True, text=True, env=ENV)
    assert resumed.returncode == 0, resumed.stderr
    [line] = [line for line in resumed.stdout.splitlines() if "resumed from step" in line]
    return int(line.split()[-1])


def test_sigkill_then_resume_is_bitwise_exact(corpus, tmp_path, monkeypatch):
    out = tmp_path / "killed"
    proc = start_and_wait_for(cli_args(corpus, out), (out / "checkpoint.pt").exists, "checkpoint")
    time.sleep(0.3)  # let it run past the first checkpoint, into the middle of the run
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "summary.json").exists(), "killed before the end"
    assert 0 < resume(out) < STEPS

    torch.set_num_threads(1)
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=STEPS, save_every=5, eval_every=50, log_every=10)
    model_cfg.n_layer, model_cfg.n_head, model_cfg.d_model = 1, 2, 16
    cfg.batch_size, cfg.warmup, cfg.eval_tokens, cfg.lr = 4, 50, 16384, 3e-3
    saved = capture_saved_models(monkeypatch)
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False).run_dir
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    # equal because both are the trained weights, not two files of zeros or of the init
    in_memory = saved[-1].state_dict()
    assert all(torch.equal(a[k], in_memory[k]) for k in a)
    (killed_model, tokenizer, config), (whole_model, _, _) = load_run(out), load_run(whole)
    assert_trained(b, config)
    tokens = tokenizer.encode("tests long while")
    assert torch.equal(logits_on(killed_model, tokens), logits_on(whole_model, tokens))


def test_ctrl_c_saves_a_checkpoint_of_its_own_exits_130_and_resume_continues_from_it(corpus, tmp_path):
    """No periodic checkpoint can exist (--save-every past the last step): the one resume finds is
    the one Ctrl-C wrote, at the step training had reached."""
    out = tmp_path / "interrupted"
    steps = STEPS
    proc = start_and_wait_for(cli_args(corpus, out, save_every=10 * steps, steps=steps), lambda: logged_steps(out),
                              "logged step")
    assert not (out / "checkpoint.pt").exists()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert f"posbench train --resume {out}" in err
    assert "Traceback" not in err
    assert (out / "checkpoint.pt").is_file() and not (out / "summary.json").exists()
    reached = max(logged_steps(out))
    assert reached <= resume(out) < steps, "resumed where Ctrl-C stopped, not from the start"


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
