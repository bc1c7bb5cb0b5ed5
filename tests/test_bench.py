"""`posbench bench`: rows per method, ratios to `none` measured in the same run."""

import gc
import json
import math
import multiprocessing
import sys
import types

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from posbench import cli
from posbench.errors import PosbenchError
from posbench.experiments import bench as bench_module
from posbench.experiments.bench import bench, peak_memory, training_flops_per_token
from posbench.model.gpt import GPT
from posbench.runs.config import ModelConfig


def test_bench_measures_each_asked_method_in_order():
    # batch 64 x 16 tokens: the (1024, 4096) logits and their gradient raise the peak RSS for sure
    rows = bench(["none", "alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=16, batch=64, steps=1,
                 device="cpu", threads=1)
    assert [r["pos"] for r in rows] == ["none", "alibi"]
    assert all(r["train_tokens_per_s"] > 0 and r["eval_tokens_per_s"] > 0 and r["peak_memory_mb"] > 0 for r in rows)
    assert rows[0]["params"] == rows[1]["params"], "ALiBi adds no parameters"


class InProcessPool:
    """Stands in for the spawn pool bench() measures CPU memory in, so monkeypatched functions apply."""

    def __init__(self, *args, **kwargs):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def starmap(self, func, iterable, chunksize=1):
        return [func(*args) for args in iterable]


def fake_measurements(monkeypatch, speeds: dict, memory: dict):
    """bench() with hand-made numbers: speeds[pos] = (train, eval) tokens/s of each call in turn
    (the throwaway pass first, then one per round), memory[pos] = MB."""
    calls = {("train", pos): iter(train) for pos, (train, _) in speeds.items()}
    calls |= {("eval", pos): iter(evals) for pos, (_, evals) in speeds.items()}
    monkeypatch.setattr(bench_module, "train_rate", lambda net, *a, **k: next(calls["train", net.config.pos]))
    monkeypatch.setattr(bench_module, "eval_rate", lambda net, *a, **k: next(calls["eval", net.config.pos]))
    monkeypatch.setattr(bench_module, "peak_memory", lambda pos, *a: memory[pos])
    monkeypatch.setattr(bench_module.multiprocessing, "get_context",
                        lambda method: types.SimpleNamespace(Pool=InProcessPool))


def test_ratios_are_each_method_over_none_from_the_best_round(monkeypatch):
    # per call: the throwaway pass (fast here, and it must not count), then rounds 1 and 2
    speeds = {"none": ([9000.0, 1000.0, 900.0], [9000.0, 1800.0, 2000.0]),
              "alibi": ([9000.0, 700.0, 800.0], [9000.0, 2500.0, 2400.0]),
              "t5": ([9000.0, 500.0, 400.0], [9000.0, 1000.0, 500.0])}
    fake_measurements(monkeypatch, speeds, {"none": 10.0, "alibi": 15.0, "t5": 40.0})
    rows = bench(["alibi", "t5"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=8, batch=1, steps=1,
                 device="cpu", threads=1, rounds=2)
    assert [r["pos"] for r in rows] == ["alibi", "t5"], "none is measured, but only asked rows are returned"
    alibi, t5 = rows
    assert (alibi["train_tokens_per_s"], alibi["eval_tokens_per_s"], alibi["peak_memory_mb"]) == (800.0, 2500.0, 15.0)
    # train: 800 / 1000 and 500 / 1000; eval: 2500 / 2000 and 1000 / 2000; memory: 15 / 10 and 40 / 10
    assert (alibi["train_vs_none"], alibi["eval_vs_none"], alibi["memory_vs_none"]) == pytest.approx((0.8, 1.25, 1.5))
    assert (t5["train_vs_none"], t5["eval_vs_none"], t5["memory_vs_none"]) == pytest.approx((0.5, 0.5, 4.0))


@pytest.mark.parametrize("precision, dtype", [("fp32", torch.float32), ("bf16", torch.bfloat16)])
def test_bench_times_the_steps_in_the_precision_asked(precision, dtype, monkeypatch):
    """--precision bf16 times the steps under CPU autocast, as training in bf16 runs them; fp32 without."""
    seen = []
    forward = GPT.forward

    def spy(self, idx, *args, **kwargs):
        logits = forward(self, idx, *args, **kwargs)
        seen.append(logits.dtype)
        return logits

    monkeypatch.setattr(GPT, "forward", spy)
    monkeypatch.setattr(bench_module, "peak_memory", lambda pos, *a: 1.0)
    monkeypatch.setattr(bench_module.multiprocessing, "get_context",
                        lambda method: types.SimpleNamespace(Pool=InProcessPool))
    rows = bench(["alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=8, batch=1, steps=1,
                 device="cpu", threads=1, rounds=1, precision=precision)
    assert rows[0]["precision"] == precision and seen and set(seen) == {dtype}


def test_bench_refuses_an_unknown_precision():
    with pytest.raises(PosbenchError, match="--precision must be one of"):
        bench(["alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=8, batch=1, steps=1, device="cpu",
              threads=1, precision="fp8")


def test_memory_ratio_is_nan_when_none_adds_no_memory(monkeypatch):
    fake_measurements(monkeypatch, {"none": ([1.0] * 3, [1.0] * 3), "alibi": ([2.0] * 3, [2.0] * 3)},
                      {"none": 0.0, "alibi": 3.0})
    [alibi] = bench(["alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=8, batch=1, steps=1,
                    device="cpu", threads=1, rounds=2)
    assert alibi["train_vs_none"] == 2.0 and math.isnan(alibi["memory_vs_none"])


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


def test_model_flops_per_token_match_the_matmuls_torch_counts():
    """training_flops_per_token (6 per weight plus 12 * layers * d * L) against torch's own count of
    the matmul FLOPs of one forward + backward, attention through SDPA's math path (plain matmuls,
    which it counts over the full square, causality not subtracted, as the formula does)."""
    model = GPT(ModelConfig(pos="none", n_layer=2, n_head=4, d_model=64, vocab_size=256, train_len=48))
    idx = torch.randint(0, 256, (3, 48))
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(idx).sum().backward()
    counted = counter.get_total_flops() / idx.numel()
    assert training_flops_per_token(model) == counted  # exact: both count whole multiply-adds


def test_no_timed_model_is_alive_while_memory_is_measured(monkeypatch):
    """On CUDA peak memory is measured in bench's own process: a timed model still referenced (a
    loop variable, say) would add its weights to every method's peak."""
    alive = []

    def count_models(pos, *args):
        gc.collect()
        alive.append(sum(isinstance(obj, GPT) for obj in gc.get_objects()))
        return 1.0

    fake_measurements(monkeypatch, {pos: ([1.0] * 2, [1.0] * 2) for pos in ("none", "alibi")}, {})
    monkeypatch.setattr(bench_module, "peak_memory", count_models)
    bench(["alibi"], {"n_layer": 1, "n_head": 2, "d_model": 16}, train_len=8, batch=1, steps=1, device="cpu",
          threads=1, rounds=1)
    assert alive == [0, 0]
