"""The GPT and its attention kernel, for every position method."""

import pytest
import torch
import torch.nn.functional as F

from posbench.errors import LengthError, PosbenchError
from posbench.model import attention as attention_module
from posbench.model import biased_attention
from posbench.model import gpt as gpt_module
from posbench.model.attention import causal_attention
from posbench.model.gpt import KVCache, ModelConfig

from .helpers import ALL_METHODS, span, tiny_model


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_causality(pos):
    model = tiny_model(pos)
    torch.manual_seed(1)
    idx = torch.randint(0, 64, (2, 24))
    t = 10
    changed = idx.clone()
    changed[:, t + 1 :] = torch.randint(0, 64, (2, 24 - t - 1))
    with torch.no_grad():
        a, b = model(idx), model(changed)
    assert torch.allclose(a[:, : t + 1], b[:, : t + 1], atol=1e-5)
    assert not torch.allclose(a[:, t + 1 :], b[:, t + 1 :], atol=1e-3)


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_output_shape_and_positions_matter(pos):
    model = tiny_model(pos)
    idx = torch.randint(0, 64, (3, 20))
    with torch.no_grad():
        logits = model(idx)
    assert logits.shape == (3, 20, 64)
    # swapping two earlier tokens changes the last prediction only if the model knows positions
    # (one NoPE layer sees the past as a set at the last position; deeper ones infer order from
    # the causal mask, Kazemnejad et al. 2023)
    model = tiny_model(pos, n_layer=1)
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(20)  # sharp attention, so position effects are large
    seq = torch.tensor([[1, 2, 3, 4, 5, 6]])
    swapped = torch.tensor([[2, 1, 3, 4, 5, 6]])
    with torch.no_grad():
        a, b = model(seq)[0, -1], model(swapped)[0, -1]
    moved = (a - b).abs().max().item()
    # a one-layer hybrid is its global NoPE layer
    assert (moved < 1e-6) if not model.pos.for_layer(0).encodes_positions else (moved > 1e-5), moved


def hand_attention(q, k, v, bias):
    """softmax(q k^T / sqrt(d) + bias) v, written out."""
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5 + bias
    return torch.softmax(scores, dim=-1) @ v


@pytest.mark.parametrize("pos", ["none", "alibi", "t5"])
def test_sdpa_float_bias_equals_hand_softmax(pos):
    method = tiny_model(pos).pos
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 12, 8) for _ in range(3))
    bias = method.score_bias(*span(12, 12, 0))
    bias = torch.zeros(1, 12, 12) if bias is None else bias
    bias = bias.masked_fill(torch.ones(12, 12, dtype=torch.bool).triu(1), float("-inf"))
    assert torch.allclose(causal_attention(q, k, v, method, *span(12, 12, 0)), hand_attention(q, k, v, bias), atol=1e-5)


@pytest.mark.parametrize("pos", ["none", "alibi", "t5"])
def test_chunked_attention_equals_unchunked(pos, monkeypatch):
    method = tiny_model(pos).pos
    q, k, v = (torch.randn(2, 4, 30, 8) for _ in range(3))
    full = causal_attention(q, k, v, method, *span(30, 30, 0))
    monkeypatch.setattr(attention_module, "MASK_BUDGET", 2 * 4 * 30 * 7)  # chunks of 7 queries
    if method.has_score_bias:
        assert torch.allclose(causal_attention(q, k, v, method, *span(30, 30, 0)), full, atol=1e-5)
    # queries that start mid-window (a KV cache, a sliding window) take the chunked mask path too
    suffix = causal_attention(q[:, :, 11:], k, v, method, *span(19, 30, 11))
    assert torch.allclose(suffix, full[:, :, 11:], atol=1e-5)


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_kv_cache_matches_full_forward(pos):
    # trained at 16 positions, decoded to 40: past the training length for every method but
    # `learned`, whose table stops at train_len (it gets 64 rows here, and a clear error past them)
    model = tiny_model(pos, train_len=64 if pos == "learned" else 16)
    idx = torch.randint(0, 64, (2, 40))
    with torch.no_grad():
        full = model(idx)
        cache = KVCache(model.config.n_layer)
        steps = [model(idx[:, :10], start=0, cache=cache)]  # prefill, then one token per step
        for t in range(10, 40):
            assert cache.length == t
            steps.append(model(idx[:, t : t + 1], start=t, cache=cache))
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)
    if pos == "learned":
        with pytest.raises(LengthError, match="64 rows"), torch.no_grad():
            model(idx[:, :1].repeat(1, 25), start=40, cache=cache)


def test_tied_embeddings_share_one_tensor():
    model = tiny_model("none")
    assert model.lm_head is None
    assert "lm_head.weight" not in model.state_dict()
    untied = tiny_model("none", tie_embeddings=False)
    assert untied.lm_head.weight.shape == (64, 32)


def test_config_validation():
    with pytest.raises(PosbenchError, match="unknown position method 'alibii'"):
        ModelConfig(pos="alibii")
    with pytest.raises(PosbenchError, match="not divisible"):
        ModelConfig(d_model=30, n_head=4)
    assert ModelConfig.from_dict({**ModelConfig().to_dict(), "future_field": 1}) == ModelConfig()


LEARNED_POSITIONS = {"learned", "scaled-sinusoidal", "t5", "kerple", "fire", "fox", "cope"}


def test_exactly_the_learned_methods_have_position_parameters():
    have = {pos for pos in ALL_METHODS if list(tiny_model(pos).pos.parameters())}
    assert have == LEARNED_POSITIONS


@pytest.mark.parametrize("pos", sorted(LEARNED_POSITIONS))
def test_gradient_reaches_position_parameters(pos):
    model = tiny_model(pos).train()
    idx = torch.randint(0, 64, (2, 16))
    F.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    grads = [p.grad for p in model.pos.parameters()]
    assert grads and all(g is not None and g.abs().sum() > 0 for g in grads)


def test_embed_norm_normalises_the_embedding_and_changes_the_model():
    plain, normed = tiny_model("alibi"), tiny_model("alibi", embed_norm=True)
    assert plain.ln_e is None and "ln_e.weight" not in plain.state_dict()
    assert isinstance(normed.ln_e, torch.nn.LayerNorm) and "ln_e.weight" in normed.state_dict()
    idx = torch.randint(0, 64, (2, 12))
    with torch.no_grad():
        x = normed.embed(idx)  # (B, T, D): after the position hook, the LayerNorm
        assert torch.allclose(x, F.layer_norm(normed.wte(idx), (32,)), atol=1e-5)
        assert torch.allclose(x.mean(-1), torch.zeros(2, 12), atol=1e-5)
        assert torch.allclose(plain.embed(idx), plain.wte(idx))  # alibi: no embed hook, no norm
        # same seed, same weights otherwise: only the norm differs
        assert not torch.allclose(plain(idx), normed(idx), atol=1e-3)
    # the norm comes after the method's embed hook: a learned table is normalised with the tokens
    learned = tiny_model("learned", embed_norm=True)
    with torch.no_grad():
        expected = F.layer_norm(learned.wte(idx) + learned.pos.table.weight[:12], (32,))
        assert torch.allclose(learned.embed(idx), expected, atol=1e-5)


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_forward_compiles_as_one_graph(pos):
    """`--compile`: the memoised shape-only tensors (and inference-mode checks) would break the graph;
    broken graphs once tripped a torch.compile aliasing bug on CPU. Under compile they are built inline."""
    explanation = torch._dynamo.explain(tiny_model(pos))(torch.randint(0, 64, (2, 16)))
    assert explanation.graph_break_count == 0, [b.reason for b in explanation.break_reasons]



@pytest.mark.parametrize("pos", ["rotary", "xpos"])
def test_compiled_rotation_equals_eager(pos):
    """Under compile the rotation takes the plain formula (Dynamo cannot trace the eager path's
    writes into strided halves): traced with eager kernels, the logits must be the eager model's."""
    model = tiny_model(pos)
    idx = torch.randint(0, 64, (2, 16))
    torch._dynamo.reset()
    with torch.no_grad():
        torch.testing.assert_close(torch.compile(model, backend="eager")(idx), model(idx))

# ----------------------------------------------------------------------------- explicit position ids


@pytest.mark.parametrize("pos", ALL_METHODS)
@pytest.mark.parametrize("chunked", [False, True])
def test_explicit_range_from_zero_gives_the_default_logits(pos, chunked, monkeypatch):
    """positions 0..n-1 given as ids take the explicit path (no (start, length) memo, a dense mask,
    not the Hankel view of a shift-invariant bias) and must give the same logits, with query
    chunking too: bit for bit where both take the same kernel, to rounding where the Hankel path
    sums the keys in reverse order."""
    model = tiny_model(pos)
    if chunked:  # chunks of 7 queries
        monkeypatch.setattr(attention_module, "MASK_BUDGET", 2 * 4 * 30 * 7)
        monkeypatch.setattr(biased_attention, "EVAL_CHUNK", 7)
    idx = torch.randint(0, 64, (2, 30))
    with torch.no_grad():
        default = model(idx)
        explicit = model(idx, positions=torch.arange(30))
    if model.pos.shift_invariant:
        torch.testing.assert_close(explicit, default, rtol=0, atol=1e-5)
    else:
        assert torch.equal(explicit, default)


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_explicit_shifted_range_equals_the_offset_path(pos):
    """ids start..start+n-1 equal `start=start`: the same positions, one given as a range."""
    model = tiny_model(pos, train_len=64)  # learned: table room for 17 + 20 positions
    idx = torch.randint(0, 64, (2, 20))
    with torch.no_grad():
        for start in (0, 17):
            offset = model(idx, start=start)
            explicit = model(idx, positions=torch.arange(start, start + 20))
            torch.testing.assert_close(explicit, offset, rtol=0, atol=1e-5 if model.pos.shift_invariant else 0)


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_kv_cache_with_explicit_positions_matches_full_forward(pos):
    """Decoding with gapped ids: the cache stores the keys' ids, so step by step equals one pass."""
    model = tiny_model(pos, train_len=128)
    idx = torch.randint(0, 64, (2, 16))
    ids = torch.randperm(120, generator=torch.Generator().manual_seed(0))[:16].sort().values
    with torch.no_grad():
        full = model(idx, positions=ids)
        cache = KVCache(model.config.n_layer)
        steps = [model(idx[:, :6], cache=cache, positions=ids[:6])]
        steps += [model(idx[:, t : t + 1], cache=cache, positions=ids[t : t + 1]) for t in range(6, 16)]
    assert torch.equal(cache.positions, ids)
    torch.testing.assert_close(torch.cat(steps, dim=1), full, atol=1e-4, rtol=1e-4)


# FoX's decay, CoPE's positions and stick-breaking's order come from the tokens, not from position ids
READS_NO_IDS = {"none", "fox", "cope", "stick-breaking"}


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_gapped_positions_change_the_logits_of_every_method_that_reads_positions(pos):
    model = tiny_model(pos, train_len=128)
    idx = torch.randint(0, 64, (1, 12))
    gapped = torch.arange(0, 120, 10)  # 0, 10, 20, ...: distances ten times larger
    with torch.no_grad():
        moved = (model(idx, positions=gapped) - model(idx)).abs().max().item()
    assert (moved == 0) if pos in READS_NO_IDS else (moved > 1e-4), moved


def test_explicit_positions_are_checked():
    model = tiny_model("learned", train_len=16)
    idx = torch.randint(0, 64, (1, 4))
    with pytest.raises(PosbenchError, match="4 tokens"):
        model(idx, positions=torch.arange(5))
    with pytest.raises(PosbenchError, match="1-D long"):
        model(idx, positions=torch.arange(4.0))
    with pytest.raises(LengthError, match="16 rows"):  # a table cannot hold position 16
        model(idx, positions=torch.tensor([0, 3, 9, 16]))


def nanogpt_forward(model, idx: torch.Tensor) -> torch.Tensor:
    """The pre-LayerNorm GPT of nanoGPT's model.py (karpathy/nanoGPT), written out by hand with the
    model's own weights, for a method without position information (`none`): embedding, per block
    x + attn(ln_1(x)) and x + mlp(ln_2(x)) with causal softmax attention and a GELU MLP, ln_f, the tied
    head. Anything the model does differently (a residual dropped, a norm misplaced) shows."""
    B, T = idx.shape
    x = model.wte.weight[idx]  # (B, T, D)
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for block in model.blocks:
        attn, H = block.attn, block.attn.n_head
        h = F.layer_norm(x, x.shape[-1:], block.ln_1.weight, block.ln_1.bias)
        q, k, v = (h @ attn.qkv.weight.T).split(x.size(-1), dim=-1)
        q, k, v = (t.view(B, T, H, -1).transpose(1, 2) for t in (q, k, v))  # (B, H, T, hs)
        scores = (q @ k.transpose(-2, -1) / q.size(-1) ** 0.5).masked_fill(~causal, float("-inf"))
        y = (scores.softmax(-1) @ v).transpose(1, 2).reshape(B, T, -1)
        x = x + y @ attn.proj.weight.T
        h = F.layer_norm(x, x.shape[-1:], block.ln_2.weight, block.ln_2.bias)
        x = x + F.gelu(h @ block.mlp.up.weight.T) @ block.mlp.down.weight.T
    x = F.layer_norm(x, x.shape[-1:], model.ln_f.weight, model.ln_f.bias)
    return x @ model.wte.weight.T


def test_the_model_is_nanogpts_pre_layernorm_gpt():
    model = tiny_model("none")
    with torch.no_grad():  # LayerNorm gains and biases away from 1 and 0, so a misplaced norm shows
        for block in model.blocks:
            for ln in (block.ln_1, block.ln_2):
                ln.weight.normal_(1, 0.3), ln.bias.normal_(0, 0.3)
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(model(idx), nanogpt_forward(model, idx), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("pos", ["rotary", "alibi", "t5", "fox", "cope"])
def test_cpu_bf16_autocast_runs_the_attention_in_fp32_and_the_projections_in_bf16(pos, monkeypatch):
    """`--precision bf16` on the CPU: the CPU's bf16 SDPA backward is slower than fp32's, so everything
    between the projections (rotation, decay, the attention itself) runs in fp32, while the projections
    (the bulk of the FLOPs) stay bf16; the step stays within bf16 error of fp32."""
    seen = {"attention": set(), "autocast": set(), "proj": set()}

    def spy(q, k, v, *args, **kwargs):
        seen["attention"].update({q.dtype, k.dtype, v.dtype})
        seen["autocast"].add(torch.is_autocast_enabled("cpu"))  # off: SDPA would cast q, k, v back to bf16
        return causal_attention(q, k, v, *args, **kwargs)

    monkeypatch.setattr(gpt_module, "causal_attention", spy)
    model = tiny_model(pos).train()
    for block in model.blocks:
        block.attn.proj.register_forward_hook(lambda m, i, out: seen["proj"].add(out.dtype))
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    seen["proj"].clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(idx).float().flatten(0, 1), idx.flatten())
    loss.backward()
    assert seen["attention"] == {torch.float32} and seen["autocast"] == {False} and seen["proj"] == {torch.bfloat16}
    assert abs(loss.item() - expected.item()) < 2e-2
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
