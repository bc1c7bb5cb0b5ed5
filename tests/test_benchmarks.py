"""The benchmark scripts still run (they are run by hand, so nothing else would notice them rot):
each once at a toy size."""

import argparse
import functools
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from posbench import ModelConfig
from posbench.evaluation.stats import Interval

from .helpers import run_cli
from .test_compare import tiny_preset  # noqa: F401  (the fixture)

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def benchmark_common():
    """benchmarks/common.py as a module (the scripts import it from their own folder, as `common`)."""
    spec = importlib.util.spec_from_file_location("benchmark_common", BENCHMARKS / "common.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(*args: str) -> str:
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    return done.stdout


def test_train_speed_runs_and_prints_ratios():
    out = run(str(BENCHMARKS / "train_speed.py"), "--train-len", "16", "--dim", "32", "--layers", "1",
              "--heads", "2", "--batch", "2", "--steps", "1", "--methods", "t5,learned,alibi (pose)")
    assert "t5" in out and "vs none" in out and "learned / plain" in out and "model FLOP rate" in out
    assert "alibi (pose)" in out  # trained at PoSE's ids
    assert "2nd build / 1st" in out  # the yardstick built twice: an A/A control
    assert "95% interval" in out and any(word in out for word in (" ok", " MISS", " unresolved"))


def test_eval_memory_child_measures_one_window():
    out = run(str(BENCHMARKS / "eval_memory.py"), "--child", "fire", "64")
    assert set(json.loads(out.strip().splitlines()[-1])) == {"base_mb", "peak_mb", "seconds", "loss"}


def test_eval_memory_prints_time_ratios_from_rounds_in_turns():
    out = run(str(BENCHMARKS / "eval_memory.py"), "--pos", "rotary,fire", "--lengths", "64", "--rounds", "1")
    assert "fire" in out and "x rotary's time (median of 1 rounds in turns" in out and "<= 2.0" in out


def test_attention_backward_prints_ratios_to_sdpa():
    out = run(str(BENCHMARKS / "attention_backward.py"), "--train-len", "16", "--dim", "16", "--heads", "2",
              "--batch", "2", "--steps", "1")
    assert "x SDPA causal" in out and "mild" in out and "steep (slope 1.0)" in out


def test_ratio_interval_resamples_builds_not_rounds():
    """A build that stays off for all its rounds must widen the interval (rounds resampled one by one
    would not see it), and the verdict reads the whole interval."""
    common = benchmark_common()
    median_interval, verdict = common.median_interval, common.verdict
    steady = np.array([[1.0, 1.01, 0.99]] * 4)  # (builds, rounds): every build alike
    one_off = np.vstack([steady[:3], [[0.9, 0.91, 0.89]]])
    narrow, wide = median_interval(steady), median_interval(one_off)
    assert narrow.high - narrow.low < 0.02 < wide.high - wide.low
    assert wide.low < 0.95 and wide.high >= 1.0
    assert [verdict(Interval(1, lo, hi), 0.95) for lo, hi in ((0.96, 1.1), (0.9, 0.94), (0.9, 1.0))] == \
        ["ok", "MISS", "unresolved"]


def test_an_a_a_control_widens_every_interval_by_its_distance_from_one():
    """Two identical builds measured apart: every interval is read as if that much wider on both
    sides, so a run whose control reads 1.06 certifies nothing within 6% of a target either way."""
    verdict = benchmark_common().verdict
    clear, short, straddling = Interval(1, 0.97, 1.1), Interval(1, 0.8, 0.9), Interval(1, 0.9, 1.0)
    assert [verdict(clear, 0.95, Interval(v, v - 0.02, v + 0.02)) for v in (1.0, 1.01, 0.985)] == ["ok"] * 3
    for off in (Interval(1.06, 1.04, 1.14), Interval(0.94, 0.9, 0.99)):
        assert [verdict(clear, 0.95, off), verdict(short, 0.95, off), verdict(straddling, 0.95, off)] == \
            ["unresolved"] * 3
    assert verdict(short, 0.95, Interval(1.04, 1.0, 1.08)) == "MISS"  # 0.9 + 0.04 still short of 0.95


def test_paired_times_shuffles_the_turn_order_every_round():
    """Every step runs once per round, but not always after the same neighbour: a fixed order let
    what ran just before a model bias its ratio (an A/A control of two identical models read 1.06)."""
    paired_times = benchmark_common().paired_times

    def turns(seed: int) -> list[list[str]]:
        calls = []
        steps = {name: (lambda name=name: calls.append(name) or 1.0) for name in "abcdef"}
        times = paired_times(steps, rounds=8, seed=seed)
        assert all(len(seconds) == 8 for seconds in times.values())
        return [calls[i : i + 6] for i in range(6, len(calls), 6)]  # the rounds, after one warm-up step each

    rounds = turns(seed=0)
    assert all(sorted(r) == list("abcdef") for r in rounds)
    assert len({r.index("a") for r in rounds}) > 2  # `a` takes several places in the turn
    assert len({r[r.index("a") - 1] for r in rounds if r[0] != "a"}) > 2  # after several neighbours
    assert turns(seed=0) == rounds != turns(seed=1)  # seeded: a rerun repeats it; each build its own


def test_paired_step_times_builds_the_models_in_another_order_each_time():
    """Built always in one order, each model got much the same memory at every rebuild, so a rebuild
    did not re-roll its placement: two identical builds measured 1.03x apart across 16 rebuilds."""
    paired_step_times = benchmark_common().paired_step_times
    built = []

    class Flat(torch.nn.Module):  # the same logits for every token: a model the training step can take
        def __init__(self, name: str) -> None:
            super().__init__()
            built.append(name)
            self.logits = torch.nn.Parameter(torch.zeros(ModelConfig().vocab_size))

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.logits.expand(*x.shape, -1)

    names = "abcde"
    args = argparse.Namespace(repeats=6, steps=1, batch=1, train_len=2, threads=1, dim=1, layers=1, heads=1)
    times = paired_step_times({name: functools.partial(Flat, name) for name in names}, args)
    assert all(len(seconds) == 6 for seconds in times.values())
    builds = [built[i : i + 5] for i in range(0, len(built), 5)]
    assert len(builds) == 6 and all(sorted(b) == list(names) for b in builds)
    assert len({b.index("a") for b in builds}) > 2  # `a` built at several places in the order


def test_attention_chunks_prints_ratios_by_chunk_and_restores_the_defaults():
    out = run(str(BENCHMARKS / "attention_chunks.py"), "--train-len", "16", "--dim", "16", "--heads", "2",
              "--batch", "2", "--steps", "1")
    assert "T=16 forward + backward, fixed bias" in out and "learned bias" in out and "no gradient" in out
    assert "256: " in out and "(now: TRAINING_CHUNK " in out


def test_precision_parity_pairs_each_method_and_length(tiny_preset, corpus, tmp_path, capsys, monkeypatch):  # noqa: F811
    for precision in ("fp32", "bf16"):
        code, _, _ = run_cli(["compare", "--pos", "alibi", "--preset", "tiny", "--data", corpus, "--device", "cpu",
                              "--out", str(tmp_path / precision), "--precision", precision, "--quiet"],
                             capsys, monkeypatch)
        assert code in (0, None)
    out = run(str(BENCHMARKS / "precision_parity.py"), str(tmp_path / "fp32"), str(tmp_path / "bf16"))
    lines = [line for line in out.splitlines() if line.startswith("alibi")]
    assert [line.split()[1] for line in lines] == ["16", "32", "64"] and all("[" in line for line in lines)
    assert "verdict bf16:" in out and "ratios outside" in out
