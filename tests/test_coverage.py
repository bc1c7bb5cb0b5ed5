"""Do posbench's 95% intervals cover 95%? Synthetic per-window losses with a known whole-split value,
the heterogeneity of a real corpus and dependence between neighbouring windows, thousands of
replicates, scored the way scoring.py scores (blocks spread over the split, stats.py's intervals).

The synthetic text: a loss per 64-token window = a topic level (piecewise constant over stretches of
about 30 windows, sd 0.05 nats: articles, modules, scenes) + AR(1) noise (sd 0.3, lag-1 0.3 or 0.6).
With these, the first 8,192 tokens' mean strays from the whole split's by 1.7-2.3x what independent
windows would, as measured on held-out text (docs/statistics.md: 2.0-2.4x). Deterministic: fixed seeds.
"""

import math

import numpy as np
import pytest

from posbench.evaluation.scoring import block_starts
from posbench.evaluation.stats import Windows, level, ratio

WINDOW = 64  # tokens per synthetic window
BLOCK = 16  # windows per block: the longest length is 16L, as in the presets
REPLICATES = 2000
UNIT_COUNTS = (8, 16, 32, 128)  # blocks at the longest length the presets produce (quick: 32; 8: the old quick)


def ar1(rng: np.random.Generator, shape: tuple[int, int], rho: float, sd: float) -> np.ndarray:
    """Stationary AR(1) rows: e_i = rho e_(i-1) + sqrt(1 - rho^2) z_i, e_0 = z_0."""
    e = rng.normal(size=shape[::-1])  # (columns, rows): the recursion runs over contiguous rows
    e[1:] *= math.sqrt(1 - rho**2)
    for i in range(1, len(e)):
        e[i] += rho * e[i - 1]
    return sd * e.T


def topics(rng: np.random.Generator, shape: tuple[int, int], sd: float = 0.05, mean_length: int = 30) -> np.ndarray:
    """Piecewise-constant levels: a new topic starts at each window with probability 1 / mean_length."""
    index = np.cumsum(rng.random(shape) < 1 / mean_length, axis=1)
    return np.take_along_axis(rng.normal(0, sd, (shape[0], shape[1] + 1)), index, axis=1)


def split_size(k: int) -> int:
    # windows in the held-out split: many times the scored ones (an interval for the whole split could
    # shrink by the share scored; posbench's do not, so they are conservative where that share is large)
    return max(6000, 300 * k)


def chunks(seed: int, k: int, rho: float):
    """(rng, shape) for the replicates in chunks of 500, so a long split stays within memory."""
    rng = np.random.default_rng([seed, k, int(rho * 10)])
    for _ in range(REPLICATES // 500):
        yield rng, (500, split_size(k))


def scored(per_window: np.ndarray, starts: np.ndarray) -> Windows:
    """A Windows of the blocks at `starts` (in windows), as scoring.evaluate_lengths builds one."""
    index = (starts[:, None] + np.arange(BLOCK)).ravel()
    n = len(index)
    return Windows(WINDOW, index * WINDOW, per_window[index] * WINDOW, np.full(n, WINDOW),
                   np.full(n, 3 * WINDOW), np.repeat(np.arange(len(starts)), BLOCK))


def spread(k: int) -> np.ndarray:
    return block_starts(split_size(k), BLOCK, k * BLOCK)


def first_n(k: int) -> np.ndarray:  # what posbench scored before: the split's first k blocks
    return np.arange(k) * BLOCK


def coverage_one_run(k: int, rho: float, starts_of=spread) -> float:
    starts, hits = starts_of(k), 0
    for rng, shape in chunks(0, k, rho):
        for x in 3.0 + topics(rng, shape) + ar1(rng, shape, rho, 0.3):
            ci = level([scored(x, starts)])
            hits += ci.low <= math.exp(x.mean()) <= ci.high
    return hits / REPLICATES


def coverage_paired_ratio(k: int, rho: float) -> float:
    """Method b = method a + its own smaller topic and window effects, 2% worse on average."""
    starts, hits = spread(k), 0
    for rng, shape in chunks(1, k, rho):
        a = 3.0 + topics(rng, shape) + ar1(rng, shape, rho, 0.3)
        b = a + 0.02 + topics(rng, shape, sd=0.02) + ar1(rng, shape, rho, 0.05)
        for x, y in zip(a, b, strict=True):
            ci = ratio([scored(y, starts)], [scored(x, starts)])
            hits += ci.low <= math.exp(y.mean() - x.mean()) <= ci.high
    return hits / REPLICATES


def coverage_three_seeds(k: int, rho: float) -> float:
    """Three seeds of one method on the same text: a shared loss per window, a per-seed offset (sd 0.02)
    and per-seed window noise (sd 0.05); the truth is the expected whole-split log perplexity."""
    starts, hits = spread(k), 0
    for rng, shape in chunks(2, k, rho):
        text = 3.0 + topics(rng, shape) + ar1(rng, shape, rho, 0.3)
        offsets = rng.normal(0, 0.02, (3, shape[0], 1))
        seeds = [text + offsets[s] + ar1(rng, shape, rho, 0.05) for s in range(3)]
        for r in range(shape[0]):
            ci = level([scored(seeds[s][r], starts) for s in range(3)])
            hits += ci.low <= math.exp(text[r].mean()) <= ci.high
    return hits / REPLICATES


@pytest.mark.parametrize("rho", [0.3, 0.6])
@pytest.mark.parametrize("k", UNIT_COUNTS)
def test_one_run_interval_covers_the_whole_split(k, rho):
    assert 0.93 <= coverage_one_run(k, rho) <= 0.97


@pytest.mark.parametrize("k", UNIT_COUNTS)
def test_paired_ratio_interval_covers(k):
    assert 0.93 <= coverage_paired_ratio(k, 0.3) <= 0.97


@pytest.mark.parametrize("k", UNIT_COUNTS)
def test_three_seed_log_scale_interval_covers(k):
    assert 0.93 <= coverage_three_seeds(k, 0.6) <= 0.97


def test_the_first_n_tokens_do_not_represent_the_split():
    """The same interval over the split's first blocks (what posbench scored before) misses: the planted
    defect this file exists to catch."""
    assert coverage_one_run(32, 0.3, starts_of=first_n) < 0.9
