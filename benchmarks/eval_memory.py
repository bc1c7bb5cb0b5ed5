"""Peak memory of evaluating one long window with the default model (random init).

Each (method, length) runs in a fresh subprocess, so ru_maxrss is that evaluation's peak alone.
Targets: the default small model evaluates 16384 tokens in < 4 GB, peak memory
growing about linearly in length; at the longest length ALiBi, T5 and KERPLE take <= 1.3x rotary's
time (its bias-free fused causal kernel), FIRE <= 2x. The ratios print when rotary is measured: each
from --rounds rounds of fresh processes in turns (rotary then the method, the method then rotary), the
median of the rounds' ratios, with their range.

    .venv/bin/python benchmarks/eval_memory.py [--pos rotary,alibi,t5,kerple,fire] [--lengths 4096,16384] [--rounds 3]

Peak RSS also counts memory glibc keeps after torch frees it: the per-chunk attention temporaries
of the bias methods vary in size and fragment the heap, so plain RSS is noisy from run to run. Each
row is therefore run twice, the second time with MALLOC_MMAP_THRESHOLD_=1048576 (large blocks are
mmapped and handed back on free), which shows the live-tensor peak; "seconds" is the faster of the two runs.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time


def child(pos: str, length: int) -> None:
    import numpy as np
    import torch

    from posbench import GPT, ModelConfig
    from posbench.evaluation.scoring import evaluate_lengths

    torch.manual_seed(0)
    model = GPT(ModelConfig(pos=pos)).eval()
    tokens = np.random.default_rng(0).integers(0, model.config.vocab_size, length + 1).astype(np.uint16)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux: imports + weights
    t0 = time.perf_counter()
    [result] = evaluate_lengths(model, tokens, np.ones(model.config.vocab_size, dtype=np.int64), [length],
                                max_tokens=length)
    seconds = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"base_mb": base / 1024, "peak_mb": peak / 1024, "seconds": seconds, "loss": result.loss}))


def measure(pos: str, length: int, env: dict) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", pos, str(length)], capture_output=True, text=True,
                         check=True, env={**os.environ, **env})
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pos", default="rotary,alibi,t5,kerple,fire", help="position methods, comma-separated")
    parser.add_argument("--lengths", default="4096,16384", help="window lengths, comma-separated")
    parser.add_argument("--rounds", type=int, default=3,
                        help="rounds of rotary and each method in turns, for the time ratios")
    parser.add_argument("--child", nargs=2, metavar=("POS", "LENGTH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child[0], int(args.child[1]))

    from rich.console import Console
    from rich.table import Table

    from posbench import ModelConfig

    d = ModelConfig()
    table = Table(title="peak RSS evaluating one window (default model, random init)", title_justify="left",
                  caption=f"{d.n_layer} layers, {d.n_head} heads, d_model {d.d_model}, vocab {d.vocab_size}; "
                          "one fresh process per measurement; target < 4096 MB at 16384", caption_justify="left")
    for name in ("pos", "length", "peak RSS MB", "above base MB", "x of first", "peak MB, fixed mmap",
                 "x of first ", "seconds"):
        table.add_column(name, justify="left" if name == "pos" else "right")
    lengths = [int(n) for n in args.lengths.split(",")]
    longest: dict[str, dict] = {}  # pos -> its measurement at the longest length
    for pos in args.pos.split(","):
        first = None
        for length in lengths:
            runs = [measure(pos, length, env) for env in ({}, {"MALLOC_MMAP_THRESHOLD_": "1048576"})]
            first = first or [r["peak_mb"] for r in runs]
            plain, fixed = runs
            seconds = min(plain["seconds"], fixed["seconds"])  # the less disturbed of the two
            if length == lengths[-1]:
                longest[pos] = {**plain, "seconds": seconds}
            table.add_row(pos, str(length), f"{plain['peak_mb']:,.0f}", f"{plain['peak_mb'] - plain['base_mb']:,.0f}",
                          f"{plain['peak_mb'] / first[0]:.2f}", f"{fixed['peak_mb']:,.0f}",
                          f"{fixed['peak_mb'] / first[1]:.2f}", f"{seconds:.1f}")
        table.add_section()
    Console().print(table)
    report_targets(longest, lengths[-1], args.rounds)


def report_targets(longest: dict[str, dict], length: int, rounds: int) -> None:
    """Each method's time at `length` against rotary's, with the issue's targets, and its peak memory.
    The time ratios come from rounds of fresh processes in turns (rotary first, then the method first),
    one ratio per round; printed: their median and range (a drift of the machine's speed over the
    minutes between the table's rows would otherwise pass for a difference between methods)."""
    if "rotary" not in longest:
        return
    for pos, run in longest.items():
        if pos == "rotary":
            continue
        ratios = []
        for round_ in range(rounds):
            order = ("rotary", pos) if round_ % 2 == 0 else (pos, "rotary")
            seconds = {name: measure(name, length, {})["seconds"] for name in order}
            ratios.append(seconds[pos] / seconds["rotary"])
        ratio = statistics.median(ratios)
        target = TIME_TARGETS.get(pos)
        verdict = "" if target is None else f"  (<= {target} {'ok' if ratio <= target else 'MISS'})"
        memory = "ok" if run["peak_mb"] < 4096 else "MISS"
        print(f"{pos:10s} {length} tokens: {ratio:.2f}x rotary's time (median of {rounds} rounds in turns, "
              f"{min(ratios):.2f}-{max(ratios):.2f}){verdict}; peak {run['peak_mb']:,.0f} MB (< 4096 {memory})")


TIME_TARGETS = {"alibi": 1.3, "t5": 1.3, "kerple": 1.3, "fire": 2.0}  # x rotary's time: the CPU speed targets


if __name__ == "__main__":
    main()
