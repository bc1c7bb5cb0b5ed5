"""Data-parallel training under torchrun (gloo, CPU): 2 processes with batch B/2 each follow the same
loss curve as one process with batch B."""

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from posbench.train import train

from .helpers import tiny_train

TINY = ["--tokenizer", "bytes", "--pos", "alibi", "--layers", "1", "--heads", "2", "--dim", "16",
        "--seq-len", "16", "--batch-size", "4", "--device", "cpu"]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1"}


def test_two_processes_match_one(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=8, batch_size=4, save_every=4, eval_every=4)
    single = train(model_cfg, cfg, out=tmp_path / "one", show_progress=False).run_dir

    out = tmp_path / "two"
    args = [*TORCHRUN, "-m", "posbench", "train", "--data", corpus, *TINY, "--steps", "8", "--save-every", "4",
            "--eval-every", "4", "--out", str(out), "--warmup", str(cfg.warmup), "--eval-tokens",
            str(cfg.eval_tokens), "--log-every", "1"]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def curve(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    one, two = curve(single), curve(out)
    assert len(one) == len(two) == 8
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-4, (one, two)
    a, b = load_file(str(single / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)


def test_minutes_budget_stops_every_rank_at_the_same_step(corpus, tmp_path):
    """Rank 1's clock runs 3x fast (tests/ddp_fast_clock.py): with per-rank clocks it would stop first
    and leave rank 0 waiting in an all-reduce until the timeout below."""
    out = tmp_path / "minutes"
    script = str(Path(__file__).with_name("ddp_fast_clock.py"))
    args = [*TORCHRUN, script, "train", "--data", corpus, *TINY, "--minutes", "0.03", "--eval-tokens", "64",
            "--out", str(out)]
    proc = subprocess.run(args, capture_output=True, text=True, env=ENV, timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    # the shared clock is the ranks' mean: (1 + 3) / 2 = 2x real time, so about 0.9 s of real training
    assert summary["steps"] > 1 and 1.8 <= summary["train_seconds"] < 2.5, summary
