"""Intervals for every number posbench reports. Plain numpy; no scipy.

The unit of every interval is a **block**: a stretch of the longest evaluation length's predictions,
one in each K-th of the held-out split at a random place (a stratified sample, scoring.block_starts). Every
length scores the same blocks (each cut into its own windows), every method the same blocks, so every
ratio is paired block by block. Blocks, not windows or tokens: neighbouring windows share their text's
topic (adjacent 64-token windows' losses correlate at about 0.3 on pydocs), so resampling windows
that sit side by side claims too narrow an interval; blocks far apart along the split do not share it.

A mean loss over K blocks is a ratio estimator (summed loss / summed tokens); its interval is a
Student t with K - 1 degrees of freedom on the linearised ratio, which keeps its 95% with as few as 8
blocks where a percentile bootstrap over 8 covers about 89% (docs/statistics.md has the simulation).
Over seeds everything is on the log scale (mean loss = log perplexity; bits per byte): the value is the
geometric mean of perplexity, the variance adds the spread across seeds to the blocks' (a crossed
design: every seed is scored on the same blocks), and the interval is exponentiated — never negative,
and consistent with the ratios between methods.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95  # every interval posbench reports
RESAMPLES = 1000  # bootstraps elsewhere (heads probe, benchmarks)
BOOTSTRAP_SEED = 0
# t_{0.975, df} for df = 1..30 (two-sided 95%); past 30 the Cornish-Fisher expansion is exact to 1e-3
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)
Z975 = 1.959964
LN2 = math.log(2)


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float

    def excludes(self, x: float) -> bool:
        return not self.low <= x <= self.high

    def as_list(self) -> list[float]:
        return [self.low, self.high]


@dataclass(frozen=True)
class Windows:
    """One evaluation at one length, window by window: where each window's scored predictions start,
    their summed loss (nats), how many there are (sliding windows score only their new ones), their
    UTF-8 bytes, and the block each belongs to. Arrays of one entry per window, in text order."""

    length: int
    first: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray
    bytes: np.ndarray
    block: np.ndarray

    @property
    def mean_loss(self) -> float:
        return float(self.loss.sum() / self.tokens.sum())

    @property
    def ppl(self) -> float:
        return _exp(self.mean_loss)

    @property
    def bpb(self) -> float:
        return float(self.loss.sum() / LN2 / max(self.bytes.sum(), 1))

    @property
    def n_blocks(self) -> int:
        return int(self.block.max()) + 1 if len(self.block) else 0

    def by_block(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(loss, tokens, bytes) summed per block: (K,) each."""
        k = self.n_blocks
        return tuple(np.bincount(self.block, weights=a.astype(np.float64), minlength=k)
                     for a in (self.loss, self.tokens, self.bytes))


def bytes_before(tokens: np.ndarray, token_bytes: np.ndarray) -> np.ndarray:
    """(len(tokens),) UTF-8 bytes of the targets before each prediction (entry 0 is 0): the bytes of
    predictions a..b-1 are entry b minus entry a."""
    return np.concatenate([[0], np.cumsum(np.asarray(token_bytes)[np.asarray(tokens[1:], dtype=np.int64)])])


def _exp(x: float) -> float:
    return math.exp(min(x, 700.0))


def t_quantile(df: float) -> float:
    """t_{0.975, df}: the two-sided 95% quantile of Student's t (df rounded down: conservative)."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    df = int(df)
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> Interval:
    """Mean of independent values with its 95% Student-t interval (n >= 2)."""
    x = np.asarray(values, dtype=np.float64)
    if len(x) < 2:
        raise ValueError("a t interval needs at least two values")
    mean = float(x.mean())
    half = t_quantile(len(x) - 1) * float(x.std(ddof=1)) / math.sqrt(len(x))
    return Interval(mean, mean - half, mean + half)


def resample_indices(n: int, resamples: int = RESAMPLES, seed: int = BOOTSTRAP_SEED) -> np.ndarray:
    """(resamples, n) indices drawn with replacement; the same for every caller with the same n."""
    return np.random.default_rng(seed).integers(0, n, size=(resamples, n))


def percentile_interval(samples: np.ndarray) -> tuple[float, float]:
    """The central 95% of bootstrap samples."""
    tail = (1 - LEVEL) / 2 * 100
    low, high = np.percentile(samples, [tail, 100 - tail])
    return float(low), float(high)


# ----------------------------------------------------------------------------- blocks x seeds


def linearised(num: np.ndarray, den: np.ndarray) -> tuple[float, np.ndarray]:
    """A ratio estimator sum(num) / sum(den) over blocks, and each block's linearised contribution
    (num_k - r den_k) / mean(den): their mean is the estimator's first-order error (Cochran 1977, 6.3)."""
    r = float(num.sum() / den.sum())
    return r, (num - r * den) / den.mean()


def crossed_interval(values: np.ndarray, residuals: np.ndarray) -> tuple[float, float] | None:
    """Mean over seeds of per-seed estimates `values` (S,), each with its per-block residuals (S, K)
    on the same K blocks -> (mean, half-width of its 95% interval), or None with one block.

    Variance: the blocks' (the residuals averaged over seeds, shared by every seed since all are scored
    on the same text) plus the seeds' (their spread, S >= 2); t quantile at the Welch-Satterthwaite
    degrees of freedom. With one seed this is the t interval over blocks, K - 1 degrees of freedom."""
    S, K = residuals.shape
    if K < 2:
        return None
    block_var = float(residuals.mean(0).var(ddof=1)) / K
    seed_var = float(values.var(ddof=1)) / S if S > 1 else 0.0
    total = block_var + seed_var
    if total == 0:
        return float(values.mean()), 0.0
    parts = [(block_var, K - 1)] + ([(seed_var, S - 1)] if S > 1 else [])
    df = total**2 / sum(v**2 / d for v, d in parts if v > 0)
    return float(values.mean()), t_quantile(max(1.0, df)) * math.sqrt(total)


def paired_sums(evaluations: Sequence[Windows]) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]] | None:
    """Each evaluation's (loss, tokens, bytes) per block, or None unless all scored the same predictions
    block by block (same blocks, same predictions in each): only then can their blocks be paired."""
    sums = [w.by_block() for w in evaluations]
    if not sums or any(not np.array_equal(tokens, sums[0][1]) for _, tokens, _ in sums):
        return None
    return sums


def _loss_terms(loss: np.ndarray, tokens: np.ndarray, n_bytes: np.ndarray, metric: str) -> tuple[float, np.ndarray]:
    return linearised(loss, tokens) if metric == "ppl" else linearised(loss / LN2, np.maximum(n_bytes, 1))


def _exp_interval(mean: float, half: float) -> Interval:
    """A log-scale (mean, half-width) as perplexities."""
    return Interval(_exp(mean), _exp(mean - half), _exp(mean + half))


def level(evaluations: Sequence[Windows], metric: str = "ppl") -> Interval | None:
    """One method at one length over its seeds (each seed's evaluation of the same blocks), on the log
    scale — mean loss in nats ("ppl") or bits per byte ("bpb"): perplexity (the geometric mean over
    seeds) or bits per byte (the mean) with its 95% interval over blocks and seeds; None with a single
    block, or when the seeds were not scored on the same blocks."""
    sums = paired_sums(evaluations)
    if sums is None:
        return None
    terms = [_loss_terms(*block, metric) for block in sums]
    ci = crossed_interval(np.array([v for v, _ in terms]), np.stack([z for _, z in terms]))
    if ci is None:
        return None
    return _exp_interval(*ci) if metric == "ppl" else Interval(ci[0], ci[0] - ci[1], ci[0] + ci[1])


def ppl_interval(w: Windows) -> Interval | None:
    return level([w], "ppl")


def bpb_interval(w: Windows) -> Interval | None:
    return level([w], "bpb")


def ratio(a: Sequence[Windows], b: Sequence[Windows]) -> Interval | None:
    """ppl(a) / ppl(b) — two methods at one length, or one method at two lengths — paired block by
    block and seed by seed (a[s] and b[s] share seed s): the geometric mean over seeds of the ratio,
    with its 95% interval. None when they cannot be paired (other blocks, other seed counts) or with a
    single block."""
    sums = paired_sums([*a, *b]) if len(a) == len(b) else None
    if sums is None:
        return None
    terms = [_loss_terms(*block, "ppl") for block in sums]
    pairs = list(zip(terms[: len(a)], terms[len(a) :], strict=True))
    values = np.array([va - vb for (va, _), (vb, _) in pairs])
    ci = crossed_interval(values, np.stack([za - zb for (_, za), (_, zb) in pairs]))  # exactly 0 for a vs a
    return None if ci is None else _exp_interval(*ci)


def paired_ratio(a: Windows, b: Windows) -> Interval | None:
    """ppl(a) / ppl(b) of one seed each, paired over the blocks."""
    return ratio([a], [b])


# ----------------------------------------------------------------------------- proportions and ranks


def wilson_interval(hits: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval for a binomial proportion (Wilson 1927); 95% at z = 1.96. Unlike the
    normal approximation it stays inside [0, 1] and is not empty at 0 or n hits."""
    if n == 0:
        return (0.0, 1.0)
    p, z2 = hits / n, z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return (0.0 if hits == 0 else centre - half, 1.0 if hits == n else centre + half)  # exact at the ends


def rank(x: Sequence[float] | np.ndarray) -> np.ndarray:
    """Ranks 1..n; tied values share their average rank (as scipy.stats.rankdata)."""
    _, inverse, counts = np.unique(np.asarray(x, dtype=np.float64), return_inverse=True, return_counts=True)
    first = np.cumsum(counts) - counts  # ranks taken by the smaller values
    return (first + (counts + 1) / 2)[inverse]


def spearman(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float | None:
    """Spearman's rank correlation: Pearson's r of the ranks. None when undefined (n < 2, or one
    side constant, e.g. every head with the same span)."""
    rx, ry = rank(x), rank(y)
    if rx.size != ry.size:
        raise ValueError(f"spearman needs equal lengths, got {rx.size} and {ry.size}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = math.sqrt(float((rx**2).sum() * (ry**2).sum()))
    if rx.size < 2 or denominator == 0:
        return None
    return float((rx * ry).sum() / denominator)
