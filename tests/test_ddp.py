"""Data-parallel training under torchrun (gloo, CPU): 2 processes with batch B/2 each follow the same
loss curve as one process with batch B."""

import json
import os
import subprocess
import sys

import torch
from safetensors.torch import load_file

from posbench.train import train

from .conftest import tiny_train


def test_two_processes_match_one(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=8, batch_size=4, save_every=4, eval_every=4)
    single = train(model_cfg, cfg, out=tmp_path / "one", show_progress=False).run_dir

    out = tmp_path / "two"
    args = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
            "-m", "posbench", "train", "--data", corpus, "--tokenizer", "bytes", "--pos", "alibi",
            "--layers", "1", "--heads", "2", "--dim", "16", "--seq-len", "16", "--batch-size", "4",
            "--steps", "8", "--save-every", "4", "--eval-every", "4", "--device", "cpu", "--out", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    # the tiny config sets warmup/eval_tokens/log_every that the CLI has no flag for: write them in
    proc = subprocess.run(args + ["--warmup", str(cfg.warmup), "--eval-tokens", str(cfg.eval_tokens),
                                  "--log-every", "1"], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]

    def curve(run):
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
        return [r["loss"] for r in rows if "loss" in r]

    one, two = curve(single), curve(out)
    assert len(one) == len(two) == 8
    assert max(abs(a - b) for a, b in zip(one, two, strict=True)) < 1e-4, (one, two)
    a, b = load_file(str(single / "model.safetensors")), load_file(str(out / "model.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-5) for k in a)
