"""RoPE scaling at evaluation time (positions/rope_scaling.py), each kind against its formula."""

import math

import pytest
import torch

from posbench.errors import PosbenchError
from posbench.model.gpt import KVCache
from posbench.positions import Positions
from posbench.positions.rope_scaling import apply_rope_scaling, yarn_attention_scale

from .helpers import tiny_model

F32 = torch.float32


def test_linear_at_s_times_p_equals_unscaled_at_p():
    model = tiny_model("rotary")
    cos, sin = model.pos.cos_sin(Positions(0, 50), "cpu", F32)  # positions 0..49, trained frequencies
    apply_rope_scaling(model, "linear", 4.0, train_len=32)
    cos4, sin4 = model.pos.cos_sin(Positions(0, 200), "cpu", F32)  # positions 0..199, interpolated
    assert torch.allclose(cos4[::4], cos, atol=1e-5) and torch.allclose(sin4[::4], sin, atol=1e-5)
    assert model.pos.attn_scale == 1.0
    assert model.pos.scaling == {"kind": "linear", "factor": 4.0, "train_len": 32}


def test_ntk_changes_the_base_as_the_formula_says():
    model = tiny_model("rotary", d_model=64, n_head=4)  # head dim d = 16
    trained = model.pos.inv_freq("cpu")
    apply_rope_scaling(model, "ntk", 8.0, train_len=32)
    new_base = 10000 * 8.0 ** (16 / 14)  # base * s^(d / (d - 2))
    expected = new_base ** (-torch.arange(0, 16, 2, dtype=F32) / 16)
    scaled = model.pos.inv_freq("cpu")
    assert torch.allclose(scaled, expected, rtol=1e-5)
    assert scaled[0].item() == 1.0, "the fastest pair keeps its frequency"
    assert scaled[-1].item() == pytest.approx(trained[-1].item() / 8, rel=1e-4), "the slowest is divided by s"


def test_yarn_keeps_fast_pairs_interpolates_slow_ones_and_scales_attention():
    model = tiny_model("rotary")  # head dim 8: theta = 1, 0.1, 0.01, 0.001
    theta = model.pos.inv_freq("cpu")
    L, s = 512, 4.0
    # the reference code's correction range (HF _compute_yarn_parameters): pair index where a pair
    # turns 32 times within L = 0.41 -> floor 0, where it turns once = 1.91 -> ceil 2; the ramp over
    # pairs 0..3 is 0, 0.5, 1, 1 (tests/test_reference.py checks more settings against that code)
    apply_rope_scaling(model, "yarn", s, train_len=L)
    scaled = model.pos.inv_freq("cpu")
    assert scaled[0].item() == pytest.approx(1.0)
    assert torch.allclose(scaled[2:], theta[2:] / s)
    assert scaled[1].item() == pytest.approx(0.5 * 0.1 / s + 0.5 * 0.1, rel=1e-5)
    assert 0.1 / s < scaled[1].item() < 0.1
    # attention temperature: sqrt(1/t) = 0.1 ln s + 1 on q and k each, so the logits gain its square
    m = 0.1 * math.log(s) + 1
    assert model.pos.attn_scale == pytest.approx(m) == yarn_attention_scale(s)
    assert yarn_attention_scale(1.0) == yarn_attention_scale(0.5) == 1.0
    q, k = torch.randn(2, 1, 1, 1, 8).unbind(0)
    q7, k7 = model.pos.rotate(q, k, Positions(7, q.size(-2)))  # same position: the rotation cancels, the scale stays
    assert (q7 * k7).sum().item() == pytest.approx(m**2 * (q * k).sum().item(), rel=1e-4)


def test_scaling_restarts_from_the_trained_frequencies_and_resets():
    model, fresh = tiny_model("rotary"), tiny_model("rotary")
    idx = torch.randint(0, 64, (1, 40))
    with torch.no_grad():
        before = model(idx)  # fills the cos/sin cache with the trained tables
        apply_rope_scaling(model, "yarn", 2.0, train_len=16)
        once = model(idx)
        apply_rope_scaling(model, "yarn", 2.0, train_len=16)
        assert torch.equal(model(idx), once), "applying twice does not compound"
        assert not torch.allclose(once, before, atol=1e-4), "the memoised tables were dropped"
        apply_rope_scaling(model, "none", 1.0, train_len=16)
        assert torch.allclose(model(idx), before) and torch.allclose(fresh(idx), before)
    weights, untouched = model.state_dict(), fresh.state_dict()
    assert weights.keys() == untouched.keys(), "nothing new saved"
    assert all(torch.equal(weights[name], untouched[name]) for name in weights), "weights untouched"


def test_scaled_model_still_decodes_with_a_kv_cache():
    model = tiny_model("rotary", train_len=16)
    apply_rope_scaling(model, "linear", 2.5, train_len=16)
    idx = torch.randint(0, 64, (1, 30))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config.n_layer)
        steps = [model(idx[:, :5], 0, cache)] + [model(idx[:, t : t + 1], t, cache) for t in range(5, 30)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


def test_xpos_frequencies_scale_and_its_decay_stays():
    model = tiny_model("xpos")
    decay = model.pos.decay(Positions(0, 20), "cpu", F32)
    trained = model.pos.inv_freq("cpu")
    apply_rope_scaling(model, "linear", 2.0, train_len=32)
    assert torch.allclose(model.pos.inv_freq("cpu"), trained / 2)
    assert all(torch.equal(a, b) for a, b in zip(model.pos.decay(Positions(0, 20), "cpu", F32), decay, strict=True))


@pytest.mark.parametrize("pos, kind, factor, message", [
    ("alibi", "linear", 2.0, "needs a rotary model (one with rotary layers); this run uses 'alibi'"),
    ("learned", "yarn", 2.0, "needs a rotary model"),
    ("rotary", "cubic", 2.0, "unknown RoPE scaling 'cubic'; choose from linear, ntk, yarn"),
    ("rotary", "linear", 0.0, "must be a positive number, got 0.0"),
    ("rotary", "ntk", -2.0, "must be a positive number"),
    ("rotary", "yarn", float("nan"), "must be a positive number"),
])
def test_clear_errors(pos, kind, factor, message):
    with pytest.raises(PosbenchError, match=message.replace("(", r"\(").replace(")", r"\)")):
        apply_rope_scaling(tiny_model(pos), kind, factor, train_len=32)
