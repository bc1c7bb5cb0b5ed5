"""Each position method against the formula it comes from."""

import math

import pytest
import torch

from posbench.errors import LengthError
from posbench.positions import METHODS, Positions, alibi_slopes, sinusoid_table, t5_relative_bucket
from posbench.positions import fire as fire_module
from posbench.positions.fire import fold_steady_units
from posbench.positions.rotary import RotaryPosition

from .helpers import span, tiny_config


def reference_alibi_slopes(n: int) -> list[float]:
    """The rule as the ALiBi paper's code writes it, recursively, in plain floats."""

    def power_of_2(n):
        start = 2 ** (-(2 ** -(math.log2(n) - 3)))
        return [start * start**i for i in range(n)]

    if math.log2(n).is_integer():
        return power_of_2(n)
    closest = 2 ** math.floor(math.log2(n))
    return power_of_2(closest) + reference_alibi_slopes(2 * closest)[0::2][: n - closest]


@pytest.mark.parametrize("n", range(1, 65))
def test_alibi_slopes_match_reference(n):
    assert torch.allclose(alibi_slopes(n), torch.tensor(reference_alibi_slopes(n)), rtol=1e-6)


def test_alibi_slopes_known_values():
    # Press et al.: 8 heads -> 1/2, 1/4, ..., 1/256
    assert alibi_slopes(8).tolist() == [2.0**-k for k in range(1, 9)]
    # 6 heads: the 4-head set (1/4 .. 1/256), then slopes 1 and 3 of the 8-head set
    assert alibi_slopes(6).tolist() == [2**-2, 2**-4, 2**-6, 2**-8, 2**-1, 2**-3]


def paper_alibi_slope(h: int, n: int) -> float:
    """Slope of head h (1-based) of n, n a power of two: Press et al. 2022, "Train Short, Test Long",
    Sec. 3 - the geometric sequence that starts at 2^(-8/n) with ratio 2^(-8/n), i.e. 2^(-8/n * h)."""
    return 2.0 ** (-8.0 / n * h)


@pytest.mark.parametrize("n_head", [4, 8])
def test_alibi_bias_is_minus_slope_times_distance(n_head):
    """Every causal cell of the bias against the paper's -m * (i - j), slopes from the paper's rule
    (not from alibi_slopes), with queries starting at 0 and mid-sequence (KV cache, query chunk)."""
    alibi = METHODS["alibi"](tiny_config("alibi", n_head=n_head))
    for q_len, k_len, start in ((6, 6, 0), (3, 9, 6), (4, 40, 36)):
        bias = alibi.score_bias(*span(q_len, k_len, start))  # (H, q, k)
        assert bias.shape == (n_head, q_len, k_len)
        for a in range(q_len):
            i = start + a
            for j in range(i + 1):
                expected = [-paper_alibi_slope(h, n_head) * (i - j) for h in range(1, n_head + 1)]
                assert bias[:, a, j].tolist() == pytest.approx(expected, rel=1e-6, abs=0), (start, i, j)
    assert not list(alibi.parameters()), "ALiBi slopes are fixed, not learned"


def test_t5_buckets_hand_values():
    distances = torch.tensor([0, 1, 15, 16, 31, 32, 64, 127, 128, 1000, 10**6])
    buckets = t5_relative_bucket(-distances, bidirectional=False, num_buckets=32, max_distance=128)
    # exact below 16; then 16 + floor(log(d/16)/log(8) * 16), clamped at 31
    assert buckets.tolist() == [0, 1, 15, 16, 21, 21, 26, 31, 31, 31, 31]
    assert t5_relative_bucket(torch.tensor([5]), bidirectional=False).item() == 0, "future keys -> bucket 0"


def test_t5_buckets_monotone_and_clamped():
    d = torch.arange(0, 5000)
    b = t5_relative_bucket(-d, bidirectional=False)
    assert (b[1:] >= b[:-1]).all()
    assert b.min() == 0 and b.max() == 31
    assert (b[128:] == 31).all()
    bi = t5_relative_bucket(torch.arange(-300, 301), bidirectional=True)
    assert bi.max() == 31 and bi.min() == 0
    # bidirectional: keys after the query use the upper half
    assert (bi[301:] >= 16).all() and (bi[:300] < 16).all()


def hf_t5_bucket(relative_position: int, bidirectional: bool = False, num_buckets: int = 32,
                 max_distance: int = 128) -> int:
    """`T5Attention._relative_position_bucket` of huggingface/transformers,
    src/transformers/models/t5/modeling_t5.py, transcribed for one int (relative_position = key - query)."""
    relative_buckets = 0
    if bidirectional:
        num_buckets //= 2
        relative_buckets += (relative_position > 0) * num_buckets
        relative_position = abs(relative_position)
    else:
        relative_position = -min(relative_position, 0)
    max_exact = num_buckets // 2
    if relative_position < max_exact:
        return relative_buckets + relative_position
    large = max_exact + int(math.log(relative_position / max_exact) / math.log(max_distance / max_exact)
                            * (num_buckets - max_exact))
    return relative_buckets + min(large, num_buckets - 1)


def test_t5_reference_bucket_transcription_hand_values():
    # exact below 16; then 16 + floor(log(d/16)/log(8) * 16), clamped at 31; future keys -> bucket 0
    assert [hf_t5_bucket(-d) for d in (0, 1, 15, 16, 31, 32, 64, 127, 128, 1000)] == \
        [0, 1, 15, 16, 21, 21, 26, 31, 31, 31]
    assert hf_t5_bucket(5) == 0


@pytest.mark.parametrize("q_len, k_len, start", [(24, 24, 0), (5, 160, 155), (7, 60, 50), (3, 12, 20)])
def test_t5_bias_at_every_cell_is_the_table_row_of_the_bucket_of_i_minus_j(q_len, k_len, start):
    """Query i = start + a, key j: bias[h, a, j] = table[bucket(j - i), h], the bucket as T5's code
    computes it (unidirectional, 32 buckets, max distance 128), at every cell of the grid - future
    keys (bucket 0) included - and with queries starting mid-sequence."""
    t5 = METHODS["t5"](tiny_config("t5", t5_max_distance=128))
    with torch.no_grad():  # a distinct value per (bucket, head), so any wrong row shows
        t5.bias.weight.copy_(torch.arange(32 * 4, dtype=torch.float32).view(32, 4))
    bias = t5.score_bias(*span(q_len, k_len, start))  # (H, q, k)
    assert bias.shape == (4, q_len, k_len)
    for a in range(q_len):
        i = start + a
        for j in range(k_len):
            assert bias[:, a, j].tolist() == t5.bias.weight[hf_t5_bucket(j - i)].tolist(), (i, j)


def test_sinusoid_matches_vaswani_formula():
    d = 16
    table = sinusoid_table(torch.arange(50), d)
    for p in (0, 1, 7, 49):
        for i in range(d // 2):
            angle = p / 10000 ** (2 * i / d)
            assert table[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
            assert table[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_sinusoidal_embed_adds_table_at_offset():
    sin = METHODS["sinusoidal"](tiny_config("sinusoidal"))
    x = torch.zeros(1, 4, 32)
    # scaled against the token embeddings' init size (std 0.02) to Vaswani's ratio: RMS 0.02 / sqrt(2)
    assert torch.allclose(sin.embed(x, Positions(10, 4))[0], 0.02 * sinusoid_table(torch.arange(10, 14), 32))
    legacy = METHODS["sinusoidal"](tiny_config("sinusoidal", sinusoid_ratio=1.0))  # legacy runs: 1:1
    expected = 0.02 * 2**0.5 * sinusoid_table(torch.arange(10, 14), 32)
    assert torch.allclose(legacy.embed(x, Positions(10, 4))[0], expected)


def test_scaled_sinusoidal_scale_init_and_learnable():
    method = METHODS["scaled-sinusoidal"](tiny_config("scaled-sinusoidal", d_model=64))
    assert method.scale.item() == pytest.approx(64**-0.5)
    assert method.scale.requires_grad
    x = torch.zeros(1, 3, 64)
    assert torch.allclose(method.embed(x, Positions(0, 3))[0], 64**-0.5 * sinusoid_table(torch.arange(3), 64))


def rotary_scores(rotate, q, k, m, n):
    """q rotated to position m, k to position n, their dot product."""
    qm, _ = rotate(q, k, Positions(m, 1))
    _, kn = rotate(q, k, Positions(n, 1))
    return (qm * kn).sum(-1)


def check_scores_depend_only_on_offset(rotate, **tolerance):
    """Raises AssertionError unless the score of q at m and k at n depends on m - n alone, and on it."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 8), torch.randn(1, 1, 1, 8)
    for offset in (0, 3, 50):
        ref = rotary_scores(rotate, q, k, offset, 0)
        for shift in (1, 17, 1000):
            assert torch.allclose(rotary_scores(rotate, q, k, offset + shift, shift), ref, **tolerance)
    # the property is not trivial: different offsets give different scores
    assert not torch.allclose(rotary_scores(rotate, q, k, 5, 0), rotary_scores(rotate, q, k, 0, 0))


def test_rotary_scores_depend_only_on_offset():
    check_scores_depend_only_on_offset(RotaryPosition(tiny_config("rotary")).rotate, atol=1e-4)


def test_the_offset_check_rejects_a_noop_rotation_and_a_query_only_rotation():
    def noop(q, k, positions):  # scores blind to position
        return q, k

    rope = RotaryPosition(tiny_config("rotary"))

    def query_only(q, k, positions):  # scores that depend on the query's absolute position
        return rope.rotate(q, k, positions)[0], k

    for wrong in (noop, query_only):
        with pytest.raises(AssertionError):
            check_scores_depend_only_on_offset(wrong, atol=1e-4)


def test_rotary_any_length_and_norm_preserving():
    rope = RotaryPosition(tiny_config("rotary"))
    q = torch.randn(1, 2, 5000, 8)
    q_rot, _ = rope.rotate(q, q, Positions(0, 5000))
    assert torch.allclose(q_rot.norm(dim=-1), q.norm(dim=-1), atol=1e-4)


def test_learned_raises_past_its_table():
    learned = METHODS["learned"](tiny_config("learned", train_len=16))
    learned.embed(torch.zeros(1, 16, 32), Positions(0, 16))
    with pytest.raises(LengthError, match="16 rows"):
        learned.embed(torch.zeros(1, 17, 32), Positions(0, 17))
    with pytest.raises(LengthError):
        learned.embed(torch.zeros(1, 1, 32), Positions(16, 1))


def test_registry_names():
    assert {"none", "learned", "sinusoidal", "scaled-sinusoidal", "rotary", "alibi", "t5"} <= set(METHODS)
    for name, cls in METHODS.items():
        assert cls.name == name


# ----------------------------------------------------------------------------- xPos, KERPLE, FIRE


def test_xpos_zeta_and_decay_formula():
    xpos = METHODS["xpos"](tiny_config("xpos"))  # head dim 8: 4 rotary pairs
    zeta = xpos.zeta()
    # Sun et al. 2022: zeta_i = (2i/d + 0.4) / 1.4 (torchscale: (arange(0, d, 2) + 0.4 d) / (1.4 d))
    assert torch.allclose(zeta, torch.tensor([(2 * i / 8 + 0.4) / 1.4 for i in range(4)]))
    scale, inverse = xpos.decay(Positions(100, 3), "cpu", torch.float32)  # (3, 8) each
    for row, n in enumerate((100, 101, 102)):
        expected = zeta ** (n / 512)  # scale base gamma = 512
        assert torch.allclose(scale[row], torch.cat((expected, expected)), rtol=1e-5)
        assert torch.allclose(inverse[row], 1 / torch.cat((expected, expected)), rtol=1e-5)


def test_xpos_scores_depend_only_on_offset():
    check_scores_depend_only_on_offset(METHODS["xpos"](tiny_config("xpos")).rotate, rtol=1e-4, atol=1e-5)


def test_xpos_is_rotary_times_the_decay_per_pair():
    xpos, rope = METHODS["xpos"](tiny_config("xpos")), RotaryPosition(tiny_config("rotary"))
    zeta = xpos.zeta()
    torch.manual_seed(0)
    for i in range(4):  # pair i = channels i and i + 4 (the GPT-NeoX halves pairing)
        q = torch.zeros(1, 1, 1, 8)
        q[..., i], q[..., i + 4] = 0.6, -1.3
        for d in (0, 1, 5, 40, 300, 2000):
            expected = rotary_scores(rope.rotate, q, q, d, 0) * zeta[i] ** (d / 512)
            assert torch.allclose(rotary_scores(xpos.rotate, q, q, d, 0), expected, rtol=1e-4, atol=1e-6)


def test_xpos_decay_shrinks_aligned_scores_with_distance():
    xpos = METHODS["xpos"](tiny_config("xpos"))
    xpos.set_frequencies(torch.zeros(4))  # no rotation: the decay alone remains
    q = torch.randn(1, 1, 1, 8, generator=torch.Generator().manual_seed(0))
    scores = [rotary_scores(xpos.rotate, q, q, d, 0).item() for d in (0, 1, 10, 100, 1000, 5000)]
    assert scores[0] == pytest.approx(q.pow(2).sum().item(), rel=1e-5)
    assert all(a > b > 0 for a, b in zip(scores, scores[1:], strict=False)), scores
    # the decay is relative: two aligned vectors far from the origin score as at the origin
    assert rotary_scores(xpos.rotate, q, q, 3000 + 100, 3000).item() == pytest.approx(scores[3], rel=1e-4)


def test_xpos_raises_where_its_scale_would_overflow():
    xpos = METHODS["xpos"](tiny_config("xpos"))
    limit = xpos.max_position(torch.float32)
    assert 30_000 < limit < 40_000 and 3_000 < xpos.max_position(torch.float16) < 5_000
    scale, inverse = xpos.decay(Positions(limit - 1, 1), "cpu", torch.float32)
    assert torch.isfinite(inverse).all() and (scale > 0).all()
    q = torch.zeros(1, 1, 1, 8)
    with pytest.raises(LengthError, match=f"{limit:,}"):
        xpos.rotate(q, q, Positions(limit, 1))


def test_kerple_legacy_softplus_bias_formula_and_positive_parameters():
    # the variant of legacy runs (config.json without softplus_params); the reference
    # variant's clamp is checked in tests/test_reference.py
    kerple = METHODS["kerple"](tiny_config("kerple", n_head=4, softplus_params=True))
    # the paper's code initialises r1 ~ U(0, 2), r2 ~ U(0, 1)
    assert (kerple.r1 > 0).all() and (kerple.r1 <= 2).all() and (kerple.r2 <= 1).all()
    with torch.no_grad():
        kerple.r1_raw.copy_(torch.tensor([-30.0, -1.0, 0.5, 3.0]))
        kerple.r2_raw.copy_(torch.tensor([2.0, -30.0, 0.0, -0.5]))
    r1, r2 = kerple.r1, kerple.r2
    assert (r1 >= 0.01).all() and (r2 >= 0.01).all(), "kept positive, floored at 0.01 as the paper"
    assert r1[0].item() == pytest.approx(0.01) and r2[1].item() == pytest.approx(0.01)
    bias = kerple.score_bias(*span(6, 6, 0))  # (H, q, k)
    for i in range(6):
        for j in range(i + 1):
            expected = [-r1[h].item() * math.log(1 + r2[h].item() * (i - j)) for h in range(4)]
            assert bias[:, i, j].tolist() == pytest.approx(expected, rel=1e-5, abs=1e-7)
    assert torch.allclose(kerple.score_bias(*span(2, 6, 4)), bias[:, 4:6, :6])  # KV cache / chunk offset
    # the gradient reaches a parameter sitting at the floor (softplus, not a clamp)
    kerple.score_bias(*span(6, 6, 0)).sum().backward()
    assert (kerple.r1_raw.grad != 0).all() and (kerple.r2_raw.grad != 0).all()


def test_fire_bias_matches_hand_computation():
    fire = METHODS["fire"](tiny_config("fire", train_len=8, n_head=2, fire_init_L=8.0))
    assert fire.c.item() == pytest.approx(0.1) and fire.threshold.item() == pytest.approx(8.0)  # L = init_L
    torch.manual_seed(0)
    with torch.no_grad():
        for p in fire.mlp.parameters():
            p.normal_(0, 1)
        fire.c_param.fill_(-0.3)  # used as |c|, as the reference code
        fire.L_multiplier.fill_(-0.75)  # L = |-0.75| * 8 = 6: rows 7.. normalise by their own position
    c, L = fire.c.item(), 6.0
    w1, b1 = fire.mlp[0].weight[:, 0].tolist(), fire.mlp[0].bias.tolist()
    w2, b2 = fire.mlp[2].weight.tolist(), fire.mlp[2].bias.tolist()

    def f_theta(u):  # the 1 -> 32 -> ReLU -> H MLP, by hand
        hidden = [max(0.0, w * u + b) for w, b in zip(w1, b1, strict=True)]
        return [sum(a * h for a, h in zip(row, hidden, strict=True)) + bias for row, bias in zip(w2, b2, strict=True)]

    bias = fire.score_bias(*span(12, 12, 0)).detach()  # (H, q, k)
    for i in range(12):
        for j in range(i + 1):
            u = math.log(c * (i - j) + 1) / (math.log(c * max(i, L) + 1) + 1e-6)  # psi(i-j) / psi(max(i, L))
            assert bias[:, i, j].tolist() == pytest.approx(f_theta(u), rel=1e-4, abs=1e-5), (i, j)
    assert torch.allclose(fire.score_bias(*span(3, 12, 9)), bias[:, 9:12])  # KV cache / chunk offset


def random_fire(**settings):
    """FIRE with its MLP off the init (every unit a random kink), unit 0 on everywhere (input weight
    0, positive bias), unit 1 off everywhere, unit 2 switching exactly at u = 0.25 and unit 3 at 0.75."""
    fire = METHODS["fire"](tiny_config("fire", n_head=2, **settings))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in fire.mlp.parameters():
            p.normal_(0, 1)
        fire.mlp[0].weight[:4, 0] = torch.tensor([0.0, 0.0, 2.0, -1.0])
        fire.mlp[0].bias[:4] = torch.tensor([0.7, -0.2, -0.5, 0.75])
    return fire


@pytest.mark.parametrize("low, high", [(0.0, 1.0), (0.25, 0.75), (0.3, 0.31), (-3.0, 3.0), (0.5, 0.5)])
def test_fire_folded_units_equal_the_mlp_forward_and_gradient(low, high):
    """mlp_over evaluates FIRE's MLP on a tile through only the hidden units that switch inside the
    tile's range of inputs, the others folded into one line: it must give the MLP's values and
    parameter gradients on inputs left of, on and right of every kink in the range (units switching
    exactly at an end, with input weight 0, always off included), and keep only the switching units."""
    fire = random_fire()
    w1, b1 = fire.mlp[0].weight[:, 0].detach(), fire.mlp[0].bias.detach()
    kinks = (-b1 / w1)[w1 != 0]
    inside = kinks[(kinks > low) & (kinks < high)]
    u = torch.cat((torch.linspace(low, high, 41), inside, inside + 1e-3, inside - 1e-3)).clamp(low, high)
    fast = fire.mlp_over(u[None])[:, 0].T  # (n, H)
    reference = fire.mlp(u[:, None])  # (n, H)
    torch.testing.assert_close(fast, reference, rtol=1e-5, atol=1e-5)
    weights, *_ = fold_steady_units(fire.mlp[0], fire.mlp[2], torch.tensor(low), torch.tensor(high))
    assert weights.shape[1] == 1 + len(inside), "a unit that does not switch in the range was kept (or one dropped)"
    # gradients away from the kinks, where the ReLU has no derivative (either side is a subgradient)
    u = u[(u[:, None] - kinks).abs().min(dim=1).values > 1e-4]
    fast, reference = fire.mlp_over(u[None])[:, 0].T, fire.mlp(u[:, None])
    weights = torch.randn_like(reference)
    params = list(fire.mlp.parameters())
    for got, want in zip(torch.autograd.grad((fast * weights).sum(), params),
                         torch.autograd.grad((reference * weights).sum(), params), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("q_len, start", [(20, 0), (7, 13)])
def test_fire_bias_in_tiles_equals_the_mlp(q_len, start, monkeypatch):
    """Without a gradient, score_bias builds FIRE's bias in tiles of (query, key) pairs, each through
    the units that switch within it; tiles of 3 x 5 (partial ones at the edges, a query chunk at an
    offset, queries past the threshold L) must give the plain MLP's bias, as the one-tile path does."""
    monkeypatch.setattr(fire_module, "TILE", (3, 5))
    fire = random_fire(fire_init_L=8.0)
    q_pos, k_pos = span(q_len, 20, start)
    with torch.no_grad():
        tiled = fire.score_bias(q_pos, k_pos)  # (H, q, k)
        reference = fire.mlp(fire.normalized_distance(q_pos, k_pos)[..., None]).permute(2, 0, 1)
    torch.testing.assert_close(tiled, reference, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(fire.score_bias(q_pos, k_pos).detach(), reference, rtol=1e-5, atol=1e-5)


def test_registry_has_the_new_methods():
    assert {"xpos", "kerple", "fire"} <= set(METHODS)
    assert issubclass(METHODS["xpos"], RotaryPosition), "xPos reuses rotary's pieces"


@pytest.mark.parametrize("pos", [name for name, cls in METHODS.items() if cls(tiny_config(name)).has_score_bias])
def test_shift_invariant_flag_tells_the_truth(pos):
    """Attention slices every query chunk's mask out of one matrix when a method says its bias
    depends on i - j alone; a method that said so wrongly would get wrong scores at long lengths."""
    # FIRE's bias depends on i - j alone while every query lies below its threshold: put it within reach
    method = METHODS[pos](tiny_config(pos, fire_init_L=8.0))
    torch.manual_seed(0)
    with torch.no_grad():
        for p in method.parameters():  # off the init, where a zero table would hide any position effect
            p.add_(torch.randn_like(p))
        near = method.score_bias(*span(5, 12, 7))  # queries at 7..11, keys 0..11
        far = method.score_bias(*span(5, 12 + 90, 7 + 90))[..., 90:]  # the same i - j, 90 positions later
    assert torch.equal(near, far) == method.shift_invariant


@pytest.mark.parametrize("pos", [name for name, cls in METHODS.items() if cls(tiny_config(name)).shift_invariant])
@pytest.mark.parametrize(("q_len", "k_len", "q_start", "k_start"), [(6, 6, 0, 0), (3, 9, 6, 0), (4, 5, 40, 3)])
def test_bias_laid_along_diagonals_equals_the_bias_per_query_and_key(pos, q_len, k_len, q_start, k_start):
    """At ranges of ids a shift-invariant method's bias is evaluated once per distance and laid along
    the diagonals: the same values as distance_bias of every query's id minus every key's (future
    keys included, queries mid-window, keys not from 0), and the same parameter gradients."""
    method = METHODS[pos](tiny_config(pos))
    q_ids, k_ids = torch.arange(q_start, q_start + q_len), torch.arange(k_start, k_start + k_len)
    weights = torch.randn(method.n_head, q_len, k_len, generator=torch.Generator().manual_seed(0))
    results = []
    for bias in (method.score_bias(Positions(q_start, q_len), Positions(k_start, k_len)),
                 method.distance_bias(q_ids[:, None] - k_ids[None, :])):
        params = [p for p in method.parameters() if p.requires_grad]
        grads = torch.autograd.grad((bias * weights).sum(), params) if params else ()
        results.append((bias.detach(), *grads))
    assert results[0][0].is_contiguous() and torch.equal(results[0][0], results[1][0])
    for got, want in zip(results[0][1:], results[1][1:], strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_ranges_need_no_lasting_memo_explicit_ids_share_theirs_within_one_pass_only():
    """At ranges the bias is built from Tq + Tk - 1 distances, nothing memoised; a fresh draw of ids
    (randomized positions) never enters the lasting memo, and one forward pass builds it once."""
    alibi = METHODS["alibi"](tiny_config("alibi"))
    bias = alibi.score_bias(Positions(3, 5), Positions(0, 8))  # (H, 5, 8)
    assert not alibi._static
    ids = Positions.explicit(torch.arange(3, 8))
    assert torch.equal(alibi.score_bias(ids, Positions(0, 8)), bias)
    assert not any(isinstance(part, tuple) and part[0] == "ids" for key in alibi._static for part in key)
    with alibi.one_pass():  # every layer of one forward pass shares what explicit ids built
        alibi.score_bias(ids, Positions(0, 8))
        built = dict(alibi._pass)
        alibi.score_bias(ids, Positions(0, 8))
        assert len(built) == 1 and all(alibi._pass[key] is t for key, t in built.items())
        assert torch.equal(alibi.score_bias(ids.slice(1, 3), Positions(0, 8)), bias[:, 1:4])


def test_positions_value_object():
    r = Positions(4, 3)
    assert r.is_range and len(r) == 3 and r.end() == 7 and r.key() == ("range", 4, 3)
    assert torch.equal(r.tensor(), torch.tensor([4, 5, 6]))
    assert torch.equal(r.slice(1, 2).tensor(), torch.tensor([5, 6]))
    e = Positions.explicit(torch.tensor([2, 9, 30]))
    assert not e.is_range and e.end() == 31 and torch.equal(e.slice(1, 2).tensor(), torch.tensor([9, 30]))
    assert e.slice(1, 2).key() != e.slice(0, 2).key()  # chunks of one tensor are told apart
