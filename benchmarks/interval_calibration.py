"""Are a trained run's intervals calibrated on its own held-out text? The run is evaluated once over
its whole split, every window side by side, at L and at the longest length; then, from those losses:

1. how much neighbouring text shares: the lag-1 autocorrelation of adjacent windows' mean losses at L
   and of adjacent blocks of the longest length;
2. the spread of disjoint contiguous stretches of --stretch tokens (what posbench scored before 0.2.0:
   the split's first 8,192) against the standard error of independent windows: 1 when that holds;
3. coverage of stats.ppl_interval for the whole split's perplexity, over --draws placements of the
   scored blocks (scoring.block_starts with seeds 0, 1, ...: one block at a random place in each K-th
   of the split), and over every phase of a fixed evenly spaced grid (the split read as a circle),
   for comparison.

    .venv/bin/python benchmarks/interval_calibration.py compare/alibi [--max-len 1024] [--max-tokens 32768]

Blocks sit on the window grid here (a start rounded down to a whole window), the one approximation.
"""

from __future__ import annotations

import argparse
import math

import numpy as np

from posbench.evaluation.scoring import block_starts, evaluate_lengths
from posbench.evaluation.stats import Windows, ppl_interval
from posbench.runs.folder import held_out_tokens, load_run, resolve_run


def lag1(x: np.ndarray) -> float:
    x = x - x.mean()
    return float((x[1:] * x[:-1]).sum() / (x * x).sum())


def coverage(w: Windows, window: int, longest: int, placements: list[np.ndarray]) -> tuple[float, float]:
    """(share of placements whose interval covers the whole split's perplexity, mean half-width)."""
    per_block, truth, hits, halves = longest // window, w.ppl, 0, []
    for starts in placements:
        index = (starts[:, None] + np.arange(per_block)).ravel() % len(w.loss)  # the grid wraps around
        sample = Windows(window, index * window, w.loss[index], w.tokens[index], w.tokens[index],
                         np.repeat(np.arange(len(starts)), per_block))
        ci = ppl_interval(sample)
        hits += ci.low <= truth <= ci.high
        halves.append((ci.high - ci.low) / 2)
    return hits / len(placements), float(np.mean(halves))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run")
    parser.add_argument("--max-len", type=int, default=1024)
    parser.add_argument("--max-tokens", type=int, default=32768, help="the evaluation budget (quick preset's)")
    parser.add_argument("--draws", type=int, default=2000)
    parser.add_argument("--stretch", type=int, default=8192)
    parser.add_argument("--split", default="valid")
    args = parser.parse_args()
    run_dir = resolve_run(args.run)
    model, tokenizer, config = load_run(run_dir)
    tokens = np.asarray(held_out_tokens(run_dir, config, tokenizer, args.split)[0], dtype=np.int64)
    L, longest = model.config.train_len, args.max_len
    whole = len(tokens) - 1 - (len(tokens) - 1) % longest
    ones = np.ones(tokenizer.vocab_size, dtype=np.int64)
    print(f"{run_dir}: {len(tokens):,} held-out tokens, L = {L}, longest {longest}, budget {args.max_tokens:,}")
    for window in (L, longest):
        # every window of the split side by side, as blocks of one window each
        [r] = evaluate_lengths(model, tokens[: whole + 1], ones, [window], max_tokens=whole)
        w = Windows(window, r.windows.first, r.windows.loss, r.windows.tokens, r.windows.tokens,
                    np.arange(len(r.windows.loss)))
        per_window = w.loss / w.tokens
        n = len(per_window)
        print(f"length {window}: ppl over the whole split {w.ppl:.3f}; lag-1 autocorrelation of adjacent "
              f"windows {lag1(per_window):.2f}")
        if window == L:
            stretch = args.stretch // L
            means = per_window[: n // stretch * stretch].reshape(-1, stretch).mean(1)
            se = per_window.std(ddof=1) / math.sqrt(stretch)
            print(f"  {len(means)} disjoint stretches of {args.stretch:,} tokens: their mean loss spreads "
                  f"{means.std(ddof=1) / se:.2f}x the standard error of independent windows")
        k = max(1, min(whole, args.max_tokens) // longest)
        random = [block_starts(whole, longest, args.max_tokens, seed) // window for seed in range(args.draws)]
        grid = [phase + np.arange(k) * (n // k) for phase in range(n // k)]  # the split read as a circle
        for name, placements in (("random place in each stratum", random), ("fixed grid, every phase", grid)):
            rate, half = coverage(w, window, longest, placements)
            print(f"  {k} blocks, {name}: coverage {rate:.3f} over {len(placements):,} placements "
                  f"(mean half-width {half:.2f})")


if __name__ == "__main__":
    main()
