"""Intervals for every number posbench reports: a bootstrap over evaluation windows, Student t across
seeds, and paired ratios between two evaluations of the same text. Plain numpy; no scipy.

Windows are the unit of resampling, never tokens: the tokens inside one window share their context,
so their losses are correlated and a token-level bootstrap would claim far too narrow an interval.
Every resample is drawn from a fixed seed, so a report is reproducible; two evaluations with the
same number of windows get the same resamples, which is what makes a bootstrap paired.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

LEVEL = 0.95  # every interval posbench reports
RESAMPLES = 1000
BOOTSTRAP_SEED = 0
# t_{0.975, df} for df = 1..30 (two-sided 95%); past 30 the Cornish-Fisher expansion is exact to 1e-3
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042)
Z975 = 1.959964


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
    their summed loss (nats), how many there are (sliding windows score only their new ones) and
    their UTF-8 bytes. Arrays of one entry per window, in text order."""

    length: int
    first: np.ndarray
    loss: np.ndarray
    tokens: np.ndarray
    bytes: np.ndarray

    @property
    def mean_loss(self) -> float:
        return float(self.loss.sum() / self.tokens.sum())

    @property
    def ppl(self) -> float:
        return math.exp(min(self.mean_loss, 700.0))

    def blocks(self, size: int) -> Windows:
        """The same predictions in consecutive blocks of `size` positions (by each window's first
        scored prediction): evaluations at different lengths become paired block by block."""
        index = self.first // size
        n = int(index.max()) + 1 if len(index) else 0
        sums = [np.bincount(index, weights=a.astype(np.float64), minlength=n) for a in (self.loss, self.tokens,
                                                                                        self.bytes)]
        return Windows(size, np.arange(n) * size, *sums)


def t_quantile(df: int) -> float:
    """t_{0.975, df}: the two-sided 95% quantile of Student's t."""
    if df < 1:
        raise ValueError(f"degrees of freedom must be >= 1, got {df}")
    if df <= len(T975):
        return T975[df - 1]
    z = Z975
    return z + (z**3 + z) / (4 * df) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * df**2)


def t_interval(values: Sequence[float]) -> Interval:
    """Mean of independent values (e.g. one per seed) with its 95% Student-t interval (n >= 2)."""
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


def resampled_sums(*arrays: np.ndarray) -> list[np.ndarray]:
    """For each array of per-window values, its sum over each of RESAMPLES resamples of the windows
    (drawn with replacement, from the fixed seed): (RESAMPLES,) each. Every array is resampled with
    the same indices, and so is any other call with as many windows: that pairs two evaluations.
    Drawn in blocks, so memory stays bounded with tens of thousands of windows (sliding, stride 1)."""
    n = len(arrays[0])
    rng = np.random.default_rng(BOOTSTRAP_SEED)
    block = max(1, 2**22 // n)
    sums: list[list[np.ndarray]] = [[] for _ in arrays]
    for start in range(0, RESAMPLES, block):
        idx = rng.integers(0, n, size=(min(block, RESAMPLES - start), n))
        for out, a in zip(sums, arrays, strict=True):
            out.append(a[idx].sum(1))
    return [np.concatenate(out) for out in sums]


def bootstrap_mean_loss(w: Windows) -> tuple[float, float] | None:
    """95% percentile interval of the mean loss per prediction, resampling whole windows; None with
    fewer than two windows (one window has no spread to resample)."""
    if len(w.loss) < 2:
        return None
    loss, tokens = resampled_sums(w.loss, w.tokens)
    return percentile_interval(loss / tokens)


def ppl_interval(w: Windows) -> Interval | None:
    ci = bootstrap_mean_loss(w)
    return None if ci is None else Interval(w.ppl, *(math.exp(min(x, 700.0)) for x in ci))


def bpb_interval(w: Windows) -> Interval | None:
    """Bits per byte, its interval resampling the windows' bytes along with their losses."""
    if len(w.loss) < 2:
        return None
    loss, n_bytes = resampled_sums(w.loss, w.bytes)
    samples = loss / math.log(2) / np.maximum(n_bytes, 1)
    return Interval(float(w.loss.sum() / math.log(2) / max(w.bytes.sum(), 1)), *percentile_interval(samples))


def paired_ratio(a: Windows, b: Windows) -> Interval | None:
    """ppl(a) / ppl(b) on the same predictions, with a paired bootstrap: both are cut into blocks of
    the longer window, and every resample takes the same blocks from both. None when the two did not
    score as many predictions in as many blocks (then they cannot be paired) or there are fewer than
    two blocks."""
    size = max(a.length, b.length)
    a, b = a.blocks(size), b.blocks(size)
    if len(a.tokens) != len(b.tokens) or a.tokens.sum() != b.tokens.sum() or len(a.loss) < 2:
        return None
    # a window that straddles a block boundary counts in the block it starts in: each side divides by
    # its own tokens, so lengths that do not divide each other still pair block by block
    loss_a, tokens_a, loss_b, tokens_b = resampled_sums(a.loss, a.tokens, b.loss, b.tokens)
    low, high = percentile_interval(loss_a / tokens_a - loss_b / tokens_b)  # exactly 0 for a compared with itself
    return Interval(*(math.exp(min(x, 700.0)) for x in (a.mean_loss - b.mean_loss, low, high)))


def seed_ratio(a: Sequence[float], b: Sequence[float]) -> Interval:
    """a / b paired by seed (perplexities of two methods, or of one method at two lengths): the
    geometric mean of the per-seed ratios with a 95% t interval over seeds on the log scale."""
    logs = np.log(np.asarray(a, dtype=np.float64)) - np.log(np.asarray(b, dtype=np.float64))
    t = t_interval(logs)
    return Interval(*(math.exp(min(x, 700.0)) for x in (t.value, t.low, t.high)))


def level(values: Sequence[Windows], metric: str = "ppl") -> Interval | None:
    """One method at one length over its seeds: the mean over seeds with a t interval (two or more
    seeds), or with one seed the value with its bootstrap interval over windows."""
    if len(values) == 1:
        return (ppl_interval if metric == "ppl" else bpb_interval)(values[0])
    points = [w.ppl if metric == "ppl" else float(w.loss.sum() / math.log(2) / max(w.bytes.sum(), 1))
              for w in values]
    return t_interval(points)


def ratio(a: Sequence[Windows], b: Sequence[Windows]) -> Interval | None:
    """ppl(a) / ppl(b), evaluations paired seed by seed: over windows with one seed, over seeds with more."""
    if len(a) != len(b):
        return None
    if len(a) == 1:
        return paired_ratio(a[0], b[0])
    return seed_ratio([w.ppl for w in a], [w.ppl for w in b])
