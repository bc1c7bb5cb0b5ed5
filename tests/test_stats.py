"""stats.py: Student t, intervals over blocks (and seeds), paired ratios — against known values and constructed
data. Coverage on synthetic data with known truth is in test_coverage.py."""

import math

import numpy as np
import pytest

from posbench.evaluation.scoring import evaluate_lengths
from posbench.evaluation.stats import (
    Windows,
    bpb_interval,
    level,
    paired_ratio,
    ppl_interval,
    ratio,
    t_interval,
    t_quantile,
)
from posbench.model.gpt import GPT, ModelConfig


def windows(n: int, length: int = 16, seed: int = 0, shift: float = 0.0) -> Windows:
    """n windows (one block each) of `length` predictions with i.i.d. mean losses around 3 nats (+ shift)."""
    rng = np.random.default_rng(seed)
    loss = (3.0 + shift + rng.normal(0, 0.3, n)) * length
    return Windows(length, np.arange(n) * length, loss, np.full(n, length), np.full(n, 3 * length), np.arange(n))


def test_t_quantile_known_values():
    assert t_quantile(1) == pytest.approx(12.706, abs=1e-3)
    assert t_quantile(2) == pytest.approx(4.303, abs=1e-3)
    assert t_quantile(4) == pytest.approx(2.776, abs=1e-3)
    assert t_quantile(30) == pytest.approx(2.042, abs=1e-3)
    assert t_quantile(60) == pytest.approx(2.000, abs=1e-3)  # the expansion past the table
    assert t_quantile(120) == pytest.approx(1.980, abs=1e-3)
    assert t_quantile(10**6) == pytest.approx(1.960, abs=1e-3)


def test_t_interval():
    t = t_interval([1.0, 2.0, 3.0])  # mean 2, sd 1, n 3: half width 4.303 / sqrt(3)
    assert (t.value, t.high - t.value) == (2.0, pytest.approx(4.303 / math.sqrt(3), abs=1e-3))
    assert t.low < 1.0 and t.high > 3.0  # contains every value here
    with pytest.raises(ValueError):
        t_interval([1.0])


def test_one_run_interval_is_a_t_interval_over_blocks():
    w = windows(10)
    means = w.loss / w.tokens  # one window per block, equal tokens: the ratio estimator is the mean
    half = t_quantile(9) * means.std(ddof=1) / math.sqrt(10)
    ci = ppl_interval(w)
    assert (math.log(ci.low), math.log(ci.value), math.log(ci.high)) == pytest.approx(
        (means.mean() - half, means.mean(), means.mean() + half))
    b = bpb_interval(w)  # 3 bytes per token: bits per byte = nats / ln 2 / 3
    assert (b.low, b.high) == pytest.approx(((means.mean() - half) / math.log(2) / 3,
                                             (means.mean() + half) / math.log(2) / 3))
    assert ppl_interval(windows(1)) is None  # one block: no spread to measure


def test_interval_narrows_with_more_blocks():
    widths = [math.log(ppl_interval(w).high / ppl_interval(w).low) for w in (windows(64), windows(256, seed=1))]
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.12)  # 4x the blocks: half the width


def test_blocks_not_windows_are_the_unit():
    """Four windows of one block share their text: the interval counts blocks, so it is the same as for
    the four summed into one window each (a window-level interval would be twice too narrow)."""
    w = windows(64)
    as_blocks = Windows(64, w.first[::4], w.loss.reshape(16, 4).sum(1), np.full(16, 64), np.full(16, 192),
                        np.arange(16))
    grouped = Windows(16, w.first, w.loss, w.tokens, w.bytes, np.repeat(np.arange(16), 4))
    assert ppl_interval(grouped) == ppl_interval(as_blocks)


def test_unequal_blocks_use_the_ratio_estimator():
    """Blocks of different sizes: the value is pooled (summed loss / summed tokens), not a mean of means."""
    w = Windows(8, np.array([0, 8, 16]), np.array([8.0, 40.0, 3.0]), np.array([8, 8, 1]), np.array([8, 8, 1]),
                np.array([0, 1, 2]))
    ci = ppl_interval(w)
    assert math.log(ci.value) == pytest.approx(51 / 17) and ci.low < ci.value < ci.high


def test_a_run_against_itself_is_exactly_one():
    w = windows(50)
    r = paired_ratio(w, w)
    assert (r.value, r.low, r.high) == (1.0, 1.0, 1.0)
    seeds = [windows(50, seed=k) for k in range(3)]
    s = ratio(seeds, seeds)
    assert (s.value, s.low, s.high) == (1.0, 1.0, 1.0)


def test_paired_ratio_sees_a_small_shift_that_unpaired_noise_hides():
    a, b = windows(100), windows(100, shift=0.02)  # the same windows, b 2% worse everywhere
    r = paired_ratio(b, a)
    assert r.value == pytest.approx(math.exp(0.02)) and r.low > 1  # paired: the shift is real
    # an unpaired view of the same two: their intervals overlap, so unpaired it would be "within noise"
    ia, ib = ppl_interval(a), ppl_interval(b)
    assert ib.low < ia.high
    assert paired_ratio(windows(100), windows(99)) is None  # different blocks cannot be paired


def test_paired_across_lengths_pairs_blocks():
    short = windows(64, length=16)
    short = Windows(16, short.first, short.loss, short.tokens, short.bytes, np.repeat(np.arange(16), 4))
    long = Windows(64, np.arange(16) * 64, short.loss.reshape(16, 4).sum(1), np.full(16, 64), np.full(16, 192),
                   np.arange(16))  # the same 1024 predictions, 16 blocks, as windows of 64
    r = paired_ratio(long, short)
    assert (r.value, r.low, r.high) == pytest.approx((1.0, 1.0, 1.0))


def test_seeds_on_the_log_scale():
    """Seeds at perplexity 70 and 90: a geometric mean, an interval that is never negative (a t interval
    on raw perplexity gave [-47.1, 207.1]): t over the two seeds' log perplexity when every block has the
    same loss (then the text adds no noise)."""
    base = windows(40)
    seeds = [Windows(16, base.first, np.full(40, math.log(p) * 16), base.tokens, base.bytes, base.block)
             for p in (70.0, 90.0)]
    t = level(seeds)
    assert t.value == pytest.approx(math.sqrt(70 * 90))
    logs = t_interval([math.log(70.0), math.log(90.0)])
    assert t.low > 0 and (math.log(t.low), math.log(t.high)) == pytest.approx((logs.low, logs.high), rel=1e-3)


def test_seed_interval_adds_the_blocks_noise():
    """Three seeds with identical perplexity still carry the evaluation text's noise: never narrower than
    one seed's interval over blocks (a t over seeds alone would be of width zero)."""
    w = windows(40)
    t = level([w, w, w])
    one = ppl_interval(w)
    assert (t.low, t.high) == pytest.approx((one.low, one.high)) and t.low < w.ppl < t.high
    assert ratio([w, w], [w]) is None  # seed counts differ: not paired


def test_windows_from_a_real_evaluation_add_up():
    model = GPT(ModelConfig(vocab_size=64, n_layer=1, n_head=2, d_model=16, train_len=16, pos="alibi")).eval()
    tokens = np.random.default_rng(0).integers(0, 64, 400).astype(np.uint16)
    token_bytes = np.random.default_rng(1).integers(1, 4, 64)
    for r in evaluate_lengths(model, tokens, token_bytes, [16, 48], mode="both", max_tokens=300):
        w = r.windows
        assert w.tokens.sum() == r.tokens and w.loss.sum() / r.tokens == pytest.approx(r.loss)
        assert w.loss.sum() / math.log(2) / w.bytes.sum() == pytest.approx(r.bpb)
        itself = paired_ratio(w, w)
        assert (itself.value, itself.low, itself.high) == (1.0, 1.0, 1.0)


def split(per_token: np.ndarray, length: int, block: int) -> Windows:
    first = np.arange(0, len(per_token), length)
    ends = np.minimum(first + length, len(per_token))
    loss = np.array([per_token[f:e].sum() for f, e in zip(first, ends, strict=True)])
    return Windows(length, first, loss, ends - first, ends - first, first // block)


def test_lengths_that_do_not_divide_each_other_still_pair():
    per_token = np.random.default_rng(0).normal(3, 1, 960)
    r = paired_ratio(split(per_token, 24, 48), split(per_token, 16, 48))  # one 48-token block: 2 vs 3 windows
    assert r.value == pytest.approx(1.0) and r.low <= 1 <= r.high and r.high / r.low < 1.1
    worse = paired_ratio(split(per_token + 0.1, 24, 48), split(per_token, 16, 48))
    assert worse.value == pytest.approx(math.exp(0.1)) and worse.low > 1
