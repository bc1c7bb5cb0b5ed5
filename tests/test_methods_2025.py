"""The 2024-2026 methods against their reference code: FoX's decay, SSMax and Llama 4's temperatures,
sliding-window and chunked masks, the per-layer hybrids, p-RoPE, dynamic NTK and DroPE. Each
expectation is transcribed from the reference named beside it and computed here by hand (a model's
own forward written out layer by layer), never with posbench's function under test."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from posbench import load_run
from posbench.errors import PosbenchError
from posbench.evaluation.extrapolate import EvalSettings, evaluate_run
from posbench.model import attention as attention_module
from posbench.model.decay import decay_sums, fold_decay
from posbench.model.gpt import KVCache
from posbench.positions import METHODS
from posbench.positions.rope_scaling import apply_rope_scaling
from posbench.runs.config import ModelConfig, RunConfig
from posbench.train import train

from .helpers import tiny_model, tiny_train
from .test_train import interrupted_then_resumed, losses

# ----------------------------------------------------------------------------- a hand-written forward


def hand_forward(model, idx, attend):
    """The model's forward written out (pre-LN blocks, tied head), each layer's attention given by
    attend(layer, h, q, k, v) -> (B, H, T, hd) with q, k, v: (B, H, T, hd) before any position hook."""
    B, T = idx.shape
    x = model.embed(idx)
    for layer, block in enumerate(model.blocks):
        h = block.ln_1(x)
        q, k, v = block.attn.qkv(h).view(B, T, 3, model.config.n_head, -1).permute(2, 0, 3, 1, 4)
        y = attend(layer, h, q, k, v).transpose(1, 2).reshape(B, T, -1)
        x = x + block.attn.proj(y)
        x = x + block.mlp(block.ln_2(x))
    return F.linear(model.ln_f(x), model.wte.weight)


def masked_softmax_attention(scores, allowed, v):
    """softmax over the allowed keys of (B, H, T, T) scores, then @ v."""
    return torch.softmax(scores.masked_fill(~allowed, float("-inf")), dim=-1) @ v


def causal(T):
    return torch.ones(T, T, dtype=torch.bool).tril()


# ----------------------------------------------------------------------------- FoX


def fla_naive_forgetting_attn(q, k, v, g, scale=None):
    """fla-org/flash-linear-attention, fla/ops/forgetting_attn/naive.py, transcribed: q, k, v (B, T,
    H, D), g (B, T, H) log forget gates; gc = g.cumsum(1); scores q k^T * scale + gc_i - gc_j, causal.
    `scale` may be a (H, T) tensor here (a temperature: SSMax's s log n per head and query)."""
    B, T, H, D = q.shape
    if scale is None:
        scale = D**-0.5
    gc = g.float().cumsum(1)
    mask = torch.tril(torch.ones((T, T), dtype=torch.bool))
    if isinstance(scale, torch.Tensor):
        q = q * scale.T[None, :, :, None]  # (B, T, H, D) times (1, T, H, 1)
        scale = 1.0
    ref = torch.einsum("bqhd,bkhd->bhqk", q.float() * scale, k.float())
    ref = ref + gc.permute(0, 2, 1)[..., :, None] - gc.permute(0, 2, 1)[..., None, :]
    ref = ref.masked_fill(~mask[None, None], -float("inf"))
    return torch.einsum("bhqk,bkhd->bqhd", F.softmax(ref, dim=-1), v.float())


@pytest.mark.parametrize("pos", ["fox", "fox+ssmax"])
def test_fox_equals_the_fla_naive_forgetting_attention_with_the_reference_gate(pos):
    """With SSMax the temperature scales q.k and leaves the decay alone (the decay is a bias)."""
    model = tiny_model(pos, n_layer=2)
    idx = torch.randint(0, 64, (2, 20))

    def attend(layer, h, q, k, v):
        # zhixuan-lin/forgetting-transformer, modeling_forgetting_transformer.py:
        # log_fgate = logsigmoid(fgate_proj(hidden_states).float()), fgate_proj: Linear(d, heads, bias=True)
        gate = model.pos.gates[layer].proj
        g = F.logsigmoid(F.linear(h, gate.weight, gate.bias).float())  # (B, T, H)
        scale = None
        if model.config.temperature:  # the axolotl SSMax formula, s log(n), n = q_idx + 1
            n = torch.arange(q.size(2)).float().add(1).clamp(min=2.0)
            scale = model.blocks[layer].attn.temperature.s[:, None] * n.log()[None, :] / math.sqrt(q.size(-1))
        out = fla_naive_forgetting_attn(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), g, scale)
        return out.transpose(1, 2)

    with torch.no_grad():
        torch.testing.assert_close(model(idx), hand_forward(model, idx, attend), atol=1e-5, rtol=1e-4)


def test_fox_gate_init_is_the_references():
    """Both references' _init_weights: weight N(0, initializer_range = 0.02), bias zeros."""
    torch.manual_seed(0)
    gate = METHODS["fox"](ModelConfig(pos="fox", d_model=256, n_head=8, n_layer=2)).gates[0].proj
    assert gate.bias is not None and torch.equal(gate.bias, torch.zeros(8))
    assert gate.weight.std().item() == pytest.approx(0.02, rel=0.1)


def test_the_decay_as_a_key_channel_equals_the_dense_bias_forward_and_gradient():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 9, 8, requires_grad=True) for _ in range(3))
    g = F.logsigmoid(torch.randn(2, 3, 9, requires_grad=True) * 3)
    c = g.cumsum(-1)
    dense = masked_softmax_attention(q @ k.transpose(-1, -2) / math.sqrt(8) + c[..., :, None] - c[..., None, :],
                                     causal(9), v)
    qf, kf, vf = fold_decay(q, k, v, decay_sums(g))
    assert qf.size(-1) == kf.size(-1) == vf.size(-1) == 16  # 8 + 1, a multiple of 8
    folded = F.scaled_dot_product_attention(qf, kf, vf, is_causal=True)[..., :8]
    torch.testing.assert_close(folded, dense, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(folded.square().sum(), (q, k, v))
    expected = torch.autograd.grad(dense.square().sum(), (q, k, v))
    for a, b in zip(grads, expected, strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_fox_decay_carries_across_the_kv_cache():
    model = tiny_model("fox")
    idx = torch.randint(0, 64, (1, 12))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config.n_layer)
        model(idx[:, :5], cache=cache)
        torch.testing.assert_close(model(idx[:, 5:], start=5, cache=cache), full[:, 5:], atol=1e-5, rtol=1e-4)
        # the running sums continue from the cached ones: zero them and the answer changes
        cache = KVCache(model.config.n_layer)
        model(idx[:, :5], cache=cache)
        for layer in cache.layers:
            layer[2].zero_()
        assert not torch.allclose(model(idx[:, 5:], start=5, cache=cache), full[:, 5:], atol=1e-3)


# ----------------------------------------------------------------------------- temperatures


def test_ssmax_multiplies_each_querys_logits_by_s_log_n():
    """The axolotl SSMax patch (score_mod): score * (s * log(n)), n = q_idx + 1 (clamped at 2, which
    changes nothing: a query with one key has weight 1 whatever its scale), s per layer and head."""
    model = tiny_model("rotary+ssmax")
    idx = torch.randint(0, 64, (2, 14))
    T = idx.size(1)

    def attend(layer, h, q, k, v):
        q, k = model.pos.rotate(q, k, torch.arange(T)) if False else rope(q, k)
        s = model.blocks[layer].attn.temperature.s  # (H,)
        n = torch.arange(T).float().add(1).clamp(min=2.0)
        scores = q @ k.transpose(-1, -2) / math.sqrt(q.size(-1)) * (s[:, None, None] * n.log()[:, None])
        return masked_softmax_attention(scores, causal(T), v)

    rope = hf_llama_rope(model.config.d_model // model.config.n_head, T)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), hand_forward(model, idx, attend), atol=1e-5, rtol=1e-4)
    assert model.config.label() == "rotary+ssmax"
    assert [p.shape for p in model.blocks[0].attn.temperature.parameters()] == [(4,)]


def hf_llama_rope(head_dim, T, base=10000.0):
    """HF transformers modeling_llama.py: inv_freq = 1 / base^(arange(0, d, 2) / d), emb = cat(freqs,
    freqs), q * cos + rotate_half(q) * sin."""
    inv_freq = 1.0 / (base ** (torch.arange(0, head_dim, 2).float() / head_dim))
    freqs = torch.arange(T).float()[:, None] * inv_freq[None]
    emb = torch.cat((freqs, freqs), -1)
    cos, sin = emb.cos(), emb.sin()

    def rotate_half(x):
        x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2 :]
        return torch.cat((-x2, x1), -1)

    return lambda q, k: (q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin)


@pytest.mark.parametrize("budget_rows", [None, 3])
def test_llama4_temperature_scales_the_queries_of_nope_layers_only(budget_rows, monkeypatch):
    """HF modeling_llama4.py: attn_scales = log1p(floor((cache_position + 1) / floor_scale)) * attn_scale
    + 1 multiplies the queries where not use_rope; no_rope_layers[i] = int((i + 1) % 4 != 0). The
    chunked path (query chunks that start mid-chunk, keys from their chunk's start) agrees."""
    model = tiny_model("irope+llama4", n_layer=4, window=4)
    if budget_rows:
        monkeypatch.setattr(attention_module, "MASK_BUDGET", 1 * 4 * 13 * budget_rows)
    idx = torch.randint(0, 64, (1, 13))
    T = idx.size(1)
    rope = hf_llama_rope(8, T)
    use_rope = [int((i + 1) % 4 != 0) for i in range(4)]
    attn_scales = torch.log1p(torch.floor((torch.arange(T).float() + 1.0) / 4)) * 0.1 + 1.0
    qi, kj = torch.arange(T)[:, None], torch.arange(T)[None, :]
    chunked = (kj // 4 == qi // 4) & (kj <= qi)  # masking_utils.chunked_overlay and causal_mask_function

    def attend(layer, h, q, k, v):
        if use_rope[layer]:
            q, k = rope(q, k)
            allowed = chunked
        else:
            q = q * attn_scales.view(1, 1, T, 1)
            allowed = causal(T)
        return masked_softmax_attention(q @ k.transpose(-1, -2) / math.sqrt(8), allowed, v)

    with torch.no_grad():
        torch.testing.assert_close(model(idx), hand_forward(model, idx, attend), atol=1e-5, rtol=1e-4)


def test_a_composition_is_one_label_and_unknown_parts_are_refused():
    config = ModelConfig(pos="none+llama4")
    assert (config.pos, config.temperature, config.label()) == ("none", "llama4", "none+llama4")
    assert ModelConfig.from_dict(config.to_dict()) == config
    with pytest.raises(PosbenchError, match="unknown temperature 'ssmx'.*ssmax"):
        ModelConfig(pos="rotary+ssmx")


# ----------------------------------------------------------------------------- local masks, hybrids


@pytest.mark.parametrize("n_layer, nope", [(4, [3]), (8, [3, 7]), (6, [3]), (3, [2]), (1, [0])])
def test_hybrids_put_nope_where_llama4_does(n_layer, nope):
    """Llama4TextConfig: no_rope_layers = [int((i + 1) % no_rope_layer_interval != 0)]; a model with no
    such layer (shallower than 4) gets its last one (posbench's rule, docs/methods.md)."""
    for name in ("rnope-swa", "irope"):
        model = tiny_model(name, n_layer=n_layer)
        assert [i for i in range(n_layer) if not model.pos.for_layer(i).encodes_positions] == nope


@pytest.mark.parametrize("budget_rows", [None, 3])
def test_rnope_swa_equals_mistral_sliding_window_and_a_global_nope_layer(budget_rows, monkeypatch):
    """HF masking_utils sliding_window_overlay: kv_idx > q_idx - sliding_window, with causal; the
    chunked path (a few query rows at a time) and the whole window agree."""
    model = tiny_model("rnope-swa", n_layer=4, window=5)
    if budget_rows:
        monkeypatch.setattr(attention_module, "MASK_BUDGET", 2 * 4 * 17 * budget_rows)
    idx = torch.randint(0, 64, (2, 17))
    T = idx.size(1)
    rope = hf_llama_rope(8, T)
    qi, kj = torch.arange(T)[:, None], torch.arange(T)[None, :]
    window = (kj > qi - 5) & (kj <= qi)

    def attend(layer, h, q, k, v):
        if layer == 3:
            return masked_softmax_attention(q @ k.transpose(-1, -2) / math.sqrt(8), causal(T), v)
        q, k = rope(q, k)
        return masked_softmax_attention(q @ k.transpose(-1, -2) / math.sqrt(8), window, v)

    with torch.no_grad():
        torch.testing.assert_close(model(idx), hand_forward(model, idx, attend), atol=1e-5, rtol=1e-4)


def test_a_window_of_the_training_length_is_half_of_it_by_default():
    assert tiny_model("rnope-swa", train_len=32).pos.rope.local.size == 16
    assert tiny_model("irope", train_len=32, window=8).pos.rope.local.size == 8


# ----------------------------------------------------------------------------- p-RoPE, dynamic NTK


@pytest.mark.parametrize("head_dim, p", [(8, 0.75), (16, 0.25), (16, 0.5), (32, 0.75), (8, 1.0)])
def test_p_rope_frequencies_equal_hf_proportional_rope(head_dim, p):
    """HF modeling_rope_utils.py `_compute_proportional_rope_parameters`: rope_angles =
    int(partial_rotary_factor * head_dim // 2); inv_freq_rotated = 1 / base^(arange(0, 2 rope_angles,
    2) / head_dim); zeros for the other head_dim // 2 - rope_angles."""
    rope_angles = int(p * head_dim // 2)
    rotated = 1.0 / (10000.0 ** (torch.arange(0, 2 * rope_angles, 2).float() / head_dim))
    expected = torch.cat((rotated, torch.zeros(head_dim // 2 - rope_angles)))
    method = tiny_model("p-rope", n_head=4, d_model=4 * head_dim, rope_fraction=p).pos
    torch.testing.assert_close(method.default_inv_freq("cpu"), expected)


@pytest.mark.parametrize("factor, length", [(2.0, 48), (4.0, 100), (2.0, 16), (2.0, 10)])
def test_dynamic_ntk_frequencies_equal_hf(factor, length):
    """HF `_compute_dynamic_ntk_parameters`: seq_len = max(seq_len, max_position_embeddings); base *=
    ((factor * seq_len / max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))."""
    model = tiny_model("rotary", train_len=16)
    apply_rope_scaling(model, "dynamic", factor, 16)
    dim, seq_len = 8, max(length, 16)
    base = 10000.0 * ((factor * seq_len / 16) - (factor - 1)) ** (dim / (dim - 2))
    expected = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    torch.testing.assert_close(model.pos.inv_freq("cpu", length), expected)
    # a forward over `length` positions rotates with exactly these: the same as setting them fixed
    idx = torch.randint(0, 64, (1, length))
    fixed = tiny_model("rotary", train_len=16)
    fixed.pos.set_frequencies(expected)
    with torch.no_grad():
        torch.testing.assert_close(model(idx), fixed(idx))
    apply_rope_scaling(model, None, 1.0, 16)
    assert model.pos.dynamic is None


def test_rope_scaling_keeps_p_ropes_unrotated_frequencies_at_zero():
    model = tiny_model("p-rope", rope_fraction=0.5)
    for kind in ("linear", "ntk", "yarn", "dynamic"):
        apply_rope_scaling(model, kind, 4.0, 32)
        assert (model.pos.inv_freq("cpu", 128)[2:] == 0).all(), kind


# ----------------------------------------------------------------------------- DroPE


def test_a_dropped_drope_model_is_its_weights_without_rope():
    """SakanaAI/DroPE custom_models/attention.py: position_embeddings = (ones_like(cos), zeros_like(sin)),
    the identity rotation, in every layer; the logit scale stays 1/sqrt(hd)."""
    model = tiny_model("drope")
    nope = tiny_model("none")
    nope.load_state_dict(model.state_dict(), strict=False)
    idx = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        assert not torch.allclose(model(idx), nope(idx), atol=1e-4)  # RoPE until the drop
        model.after_step(9, 0.95)  # past drop_at = 0.9
        assert model.pos.describe(20) == {"dropped_at_step": 9}
        torch.testing.assert_close(model(idx), nope(idx))
        model.after_step(10, 1.0)
        assert model.pos.describe(20) == {"dropped_at_step": 9}, "the drop is recorded once"
    assert "pos.dropped_at_step" in model.state_dict()


# ----------------------------------------------------------------------------- training, end to end


@pytest.mark.parametrize("interrupt_at", [3, 6])  # before the drop (step 4 of 8), after it
def test_drope_drops_once_records_it_and_resumes_exactly_on_either_side(interrupt_at, corpus, tmp_path, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, "drope", steps=8, save_every=4)
    model_cfg = ModelConfig(**{**model_cfg.to_dict(), "drop_at": 0.5})
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False)
    assert whole.summary["method"] == {"dropped_at_step": 4}
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=interrupt_at)
    assert resumed.resumed_from == interrupt_at - 1
    assert losses(resumed.run_dir) == losses(whole.run_dir)
    assert resumed.summary["method"] == {"dropped_at_step": 4}
    a, b = load_file(str(whole.run_dir / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, _, _ = load_run(whole.run_dir)
    assert model.pos.dropped and not model.pos.encodes_positions


@pytest.mark.parametrize("pos", ["rotary+ssmax", "irope+llama4", "fox"])
def test_a_new_method_trains_resumes_and_evaluates(pos, corpus, tmp_path, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, pos, steps=6, save_every=3)
    model_cfg = ModelConfig(**{**model_cfg.to_dict(), "n_layer": 4})  # irope: three RoPE layers, one NoPE
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False)
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=5)
    assert losses(resumed.run_dir) == losses(whole.run_dir)
    config = json.loads((whole.run_dir / "config.json").read_text())
    assert RunConfig.from_json(config).label == pos
    report, _ = evaluate_run(whole.run_dir, EvalSettings(lengths=[16, 64], max_tokens=256))
    assert report["label"] == pos and all(math.isfinite(r["ppl"]) for r in report["results"])
