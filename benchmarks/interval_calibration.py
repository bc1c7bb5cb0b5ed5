"""Are a trained run's intervals calibrated on its own held-out text? Three measurements:

1. how much neighbouring windows share: the lag-1 autocorrelation of adjacent windows' mean losses at
   the training length L, over the whole split, and of adjacent blocks of the longest length;
2. the spread of the perplexity of disjoint contiguous stretches of N tokens (what posbench scored
   before: the split's first N) against the interval's standard error: 1 when the interval holds;
3. coverage: the split cut at --cuts places (golden-ratio steps), each scored as posbench scores it
   (blocks spread over the split, stats.ppl_interval) at L and the longest length; how often the
   interval covers the whole split's perplexity at that length (every window of it, side by side).

    .venv/bin/python benchmarks/interval_calibration.py compare/alibi [--max-len 1024] [--max-tokens 32768]

Prints one block of numbers; docs/statistics.md quotes them.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from posbench.runs import held_out_tokens, load_run, resolve_run
from posbench.scoring import evaluate_lengths
from posbench.stats import ppl_interval


def lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x[1:] * x[:-1]).sum() / (x * x).sum())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=32768)
    parser.add_argument("--cuts", type=int, default=64)
    parser.add_argument("--stretch", type=int, default=8192, help="tokens per contiguous stretch (8,192: what "
                        "the quick preset scored before 0.2.0, the split's first 8,192)")
    parser.add_argument("--split", default="valid")
    args = parser.parse_args()
    run_dir = resolve_run(args.run)
    model, tokenizer, config = load_run(run_dir)
    tokens = np.asarray(held_out_tokens(run_dir, config, tokenizer, args.split)[0], dtype=np.int64)
    L, longest, budget = model.config.train_len, args.max_len, args.max_tokens
    ones = np.ones(tokenizer.vocab_size, dtype=np.int64)  # bytes do not matter here

    # the whole split at L, every window side by side: the truth, and the per-window losses
    whole = len(tokens) - 1
    [full] = evaluate_lengths(model, tokens, ones, [L], max_tokens=whole - whole % longest)
    per_window = full.windows.loss / full.windows.tokens
    truth = math.exp(full.loss)
    [blocks] = evaluate_lengths(model, tokens, ones, [longest], max_tokens=whole - whole % longest)
    truths = {L: truth, longest: math.exp(blocks.loss)}
    print(f"{run_dir}: {len(tokens):,} held-out tokens, L = {L}; ppl over the whole split at L {truth:.3f}, "
          f"at {longest} {truths[longest]:.3f}")
    print(f"lag-1 autocorrelation: adjacent windows of {L} {lag1(per_window):.2f}; adjacent blocks of {longest} "
          f"{lag1(blocks.windows.loss / blocks.windows.tokens):.2f}")

    # disjoint contiguous stretches of `budget` tokens: their spread against the interval's standard error
    stretch = args.stretch // L
    n = len(per_window) // stretch
    means = per_window[: n * stretch].reshape(n, stretch).mean(1)
    se = per_window.std(ddof=1) / math.sqrt(stretch)
    print(f"{n} disjoint stretches of {args.stretch:,} tokens: spread of their mean loss {means.std(ddof=1):.4f} = "
          f"{means.std(ddof=1) / se:.2f}x the standard error of independent windows" if n > 2 else
          f"too few disjoint stretches of {args.stretch:,} tokens ({n})")

    hits, halves = {L: 0, longest: 0}, {L: [], longest: []}
    for k in range(args.cuts):
        cut = np.roll(tokens, -int((k * 0.6180339887 % 1) * len(tokens)))
        for r in evaluate_lengths(model, cut, ones, [L, longest], max_tokens=budget):
            ci = ppl_interval(r.windows)
            hits[r.length] += ci.low <= truths[r.length] <= ci.high
            halves[r.length].append((ci.high - ci.low) / 2)
    blocks_scored = budget // longest
    for n_len in (L, longest):
        print(f"coverage at {n_len} ({blocks_scored} blocks of {longest}): {hits[n_len]} of {args.cuts} "
              f"(mean half-width {np.mean(halves[n_len]):.2f})")


if __name__ == "__main__":
    main()
