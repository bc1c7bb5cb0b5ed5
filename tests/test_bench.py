"""`posbench bench`: rows per method, ratios to `none` measured in the same run."""

import json
import multiprocessing
import sys

import pytest

from posbench import cli
from posbench.bench import bench, peak_memory


def test_bench_rows_and_ratios():
    # batch 64 x 16 tokens: the (1024, 4096) logits and their gradient raise the peak RSS for sure
    rows = bench(["none", "alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=16, batch=64, steps=1,
                 device="cpu", threads=1)
    assert [r["pos"] for r in rows] == ["none", "alibi"]
    none, alibi = rows
    assert none["train_vs_none"] == none["eval_vs_none"] == none["memory_vs_none"] == 1.0
    assert alibi["train_vs_none"] == pytest.approx(alibi["train_tokens_per_s"] / none["train_tokens_per_s"])
    assert all(r["train_tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows)


def test_cpu_step_memory_counts_the_step_not_the_process():
    """On the CPU the memory column is what one step adds to the peak RSS, not torch's ~300 MB
    import: tiny steps add almost nothing; 32x the tokens add the logits, their softmax and grads."""
    model = {"n_layer": 1, "n_head": 2, "d_model": 16}
    with multiprocessing.get_context("spawn").Pool(1, maxtasksperchild=1) as pool:
        small, large = pool.starmap(peak_memory, [("none", model, 32, 1, "cpu", 1), ("none", model, 32, 32, "cpu", 1)],
                                    chunksize=1)
    logits_mb = 32 * 32 * 4096 * 4 / 2**20  # (B*T, vocab) float32
    assert small < 20 and large > small + logits_mb, (small, large)


def test_bench_cli_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "bench.json"
    monkeypatch.setattr(sys, "argv", ["posbench", "bench", "--pos", "rotary", "--seq-len", "16", "--layers", "1",
                                      "--heads", "2", "--dim", "16", "--steps", "1", "--threads", "1",
                                      "--device", "cpu", "--json", str(out)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    rows = json.loads(out.read_text())["rows"]
    assert [r["pos"] for r in rows] == ["rotary"], "none is measured as the baseline but only asked rows are kept"
    assert "rotary" in capsys.readouterr().out
