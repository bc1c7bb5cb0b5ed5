"""stats.py: Student t, the window bootstrap, paired ratios — against known values and constructed data."""

import math

import numpy as np
import pytest

from posbench.model import GPT, ModelConfig
from posbench.scoring import evaluate_lengths
from posbench.stats import (
    Windows,
    bpb_interval,
    level,
    paired_ratio,
    ppl_interval,
    ratio,
    seed_ratio,
    t_interval,
    t_quantile,
)


def windows(n: int, length: int = 16, seed: int = 0, shift: float = 0.0) -> Windows:
    """n windows of `length` predictions each with i.i.d. mean losses around 3 nats (+ shift)."""
    rng = np.random.default_rng(seed)
    loss = (3.0 + shift + rng.normal(0, 0.3, n)) * length
    return Windows(length, np.arange(n) * length, loss, np.full(n, length), np.full(n, 3 * length))


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


def test_bootstrap_contains_the_estimate_and_narrows_with_more_windows():
    few, many = windows(64), windows(256, seed=1)
    widths = []
    for w in (few, many):
        ci = ppl_interval(w)
        assert ci.low < w.ppl < ci.high and ci.value == w.ppl
        b = bpb_interval(w)
        assert b.low < b.value < b.high
        widths.append(math.log(ci.high) - math.log(ci.low))
    assert widths[1] / widths[0] == pytest.approx(0.5, abs=0.12)  # 4x the windows: half the width
    assert ppl_interval(windows(64)) == ppl_interval(windows(64)), "a fixed resampling seed: reproducible"
    assert ppl_interval(windows(1)) is None


def test_a_run_against_itself_is_exactly_one():
    w = windows(50)
    r = paired_ratio(w, w)
    assert (r.value, r.low, r.high) == (1.0, 1.0, 1.0)
    s = seed_ratio([40.0, 41.0, 39.0], [40.0, 41.0, 39.0])
    assert (s.value, s.low, s.high) == (1.0, 1.0, 1.0)


def test_paired_ratio_sees_a_small_shift_that_unpaired_noise_hides():
    a, b = windows(100), windows(100, shift=0.02)  # the same windows, b 2% worse everywhere
    r = paired_ratio(b, a)
    assert r.value == pytest.approx(math.exp(0.02)) and r.low > 1  # paired: the shift is real
    # an unpaired view of the same two: their intervals overlap, so unpaired it would be "within noise"
    ia, ib = ppl_interval(a), ppl_interval(b)
    assert ib.low < ia.high
    assert paired_ratio(windows(100), windows(99)) is None  # different predictions cannot be paired


def test_paired_across_lengths_uses_blocks_of_the_longer_window():
    short = windows(64, length=16)  # the same 1024 predictions as 16 windows of 64
    long = Windows(64, np.arange(16) * 64, short.loss.reshape(16, 4).sum(1), np.full(16, 64), np.full(16, 192))
    r = paired_ratio(long, short)
    assert (r.value, r.low, r.high) == pytest.approx((1.0, 1.0, 1.0))


def test_level_and_ratio_over_seeds():
    seeds = [windows(40, seed=k, shift=0.05 * k) for k in range(3)]
    t = level(seeds)
    assert all(t.low <= w.ppl <= t.high for w in seeds), "the seed interval contains every seed"
    assert t.value == pytest.approx(np.mean([w.ppl for w in seeds]))
    assert level(seeds[:1]) == ppl_interval(seeds[0])  # one seed: the bootstrap over windows
    assert ratio(seeds, seeds) == seed_ratio([1, 1, 1], [1, 1, 1])


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


def split(per_token: np.ndarray, length: int) -> Windows:
    first = np.arange(0, len(per_token), length)
    ends = np.minimum(first + length, len(per_token))
    loss = np.array([per_token[f:e].sum() for f, e in zip(first, ends, strict=True)])
    return Windows(length, first, loss, ends - first, ends - first)


def test_lengths_that_do_not_divide_each_other_still_pair():
    per_token = np.random.default_rng(0).normal(3, 1, 960)
    r = paired_ratio(split(per_token, 24), split(per_token, 16))  # blocks of 24: windows of 16 straddle them
    assert r.value == pytest.approx(1.0) and r.low <= 1 <= r.high and r.high / r.low < 1.1
    worse = paired_ratio(split(per_token + 0.1, 24), split(per_token, 16))
    assert worse.value == pytest.approx(math.exp(0.1)) and worse.low > 1
