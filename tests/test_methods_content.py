"""The content-dependent methods against their reference code: CoPE (a bias from q and k) and
stick-breaking attention (a normaliser in place of the softmax). Each expectation is transcribed from
the reference named beside it and computed here by hand, never with posbench's function under test;
then the paths posbench adds around them: query chunks, the KV cache, the heads probe, training,
resuming and chunked evaluation."""

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from posbench.evaluation.extrapolate import EvalSettings, evaluate_run
from posbench.evaluation.heads import probe
from posbench.evaluation.scoring import evaluate_lengths
from posbench.model import attention as attention_module
from posbench.model.attention import causal_attention
from posbench.positions import METHODS, Positions
from posbench.runs.config import ModelConfig, RunConfig
from posbench.train import train

from .helpers import tiny_config, tiny_model, tiny_train
from .test_methods_2025 import hand_forward
from .test_train import interrupted_then_resumed, losses

CONTENT_METHODS = ["cope", "stick-breaking"]

# ----------------------------------------------------------------------------- CoPE


def ram_cope_attention(query, key, val, pos_emb, attn_mask):
    """facebookresearch/RAM, projects/cope/src/cope/context_position.py, ContextPosSelfAttn.forward with
    its defaults (no --cope-sep-key, --cope-val-gates or --cope-nodiv), transcribed: query, key, val (N,
    L, d) with N = batch x heads, pos_emb (1, d, npos), attn_mask (N, L, L) of 0/1 (1: may attend)."""
    npos, d = pos_emb.size(-1), query.size(-1)
    gate_logits = torch.bmm(query, key.transpose(-1, -2))  # N x L(q) x L(k)
    gates = torch.sigmoid(gate_logits / math.sqrt(d)) * attn_mask
    positions = gates.flip(-1).cumsum(dim=-1).flip(-1).clamp(max=npos - 1)
    pos_logits_fixed = torch.matmul(query, pos_emb)  # N x L x npos
    ceil, floor = positions.ceil().long(), positions.floor().long()
    ceil_weight = positions - floor
    pos_logits_ceil, pos_logits_floor = pos_logits_fixed.gather(-1, ceil), pos_logits_fixed.gather(-1, floor)
    pos_logits = pos_logits_ceil * ceil_weight + pos_logits_floor * (1 - ceil_weight)
    attn_logits = (gate_logits + pos_logits) / math.sqrt(d) + attn_mask.log()
    return torch.bmm(torch.softmax(attn_logits, dim=-1), val)


def cope_reference(q, k, v, table):
    """ram_cope_attention on (B, H, T, d) tensors with the causal mask of RAM's DecoderCore
    (ones(L, L).tril()), heads folded into the batch as RAM's split_heads does."""
    B, H, T, d = q.shape
    mask = torch.ones(T, T).tril()[None].expand(B * H, T, T)
    out = ram_cope_attention(*(x.reshape(B * H, T, d) for x in (q, k, v)), table[None], mask)
    return out.view(B, H, T, d)


def test_cope_attention_equals_the_ram_reference_forward_and_gradient():
    """L = 8, so npos = 9 and 20 tokens reach the clamp; sharp q and k, so the gates spread over (0, 1)."""
    layer = tiny_model("cope", train_len=8).pos.for_layer(0)
    assert layer.table.shape == (8, 9)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 20, 8, requires_grad=True) for _ in range(3))
    with torch.no_grad():
        q.mul_(2), k.mul_(2)
    positions = Positions(0, 20)
    out = causal_attention(q, k, v, layer, positions, positions)
    expected = cope_reference(q, k, v, layer.table)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    inputs = (q, k, v, layer.table)
    grads = torch.autograd.grad(out.square().sum(), inputs)
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), inputs), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)
    # the clamp was reached: a position of 8 or more gated keys exists in the last rows
    gates = torch.sigmoid(q @ k.transpose(-1, -2) / math.sqrt(8)).tril()
    assert gates.sum(-1).max() > 8


def test_cope_model_equals_the_reference_layer_by_layer():
    model = tiny_model("cope", train_len=8, n_layer=2)
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))

    def attend(layer, h, q, k, v):
        return cope_reference(q, k, v, model.pos.for_layer(layer).table)

    with torch.no_grad():
        torch.testing.assert_close(model(idx), hand_forward(model, idx, attend), atol=1e-5, rtol=1e-4)


def test_cope_table_per_layer_zeros_at_init_and_npos_is_l_plus_one():
    """RAM: pos_emb = zeros(1, head_dim, npos) per layer, npos = block_size + 1 without --cope-npos."""
    config = ModelConfig(pos="cope", d_model=64, n_head=4, n_layer=3, train_len=48)
    method = METHODS["cope"](config)
    tables = [method.for_layer(i).table for i in range(3)]
    assert len({id(t) for t in tables}) == 3
    assert all(t.shape == (16, 49) and not t.any() for t in tables)


# ----------------------------------------------------------------------------- stick-breaking


def sb_ref_stickbreaking(q, k, v, mask, cum_weight):
    """shawntan/stickbreaking-attention, stickbreaking_attention/sb_ref.py, stickbreaking(), transcribed
    (its debug print left out): returns att @ v and the remainder 1 - sum_j att."""
    logits = (q @ k.transpose(-1, -2)) / math.sqrt(q.shape[-1])
    original_dtype = logits.dtype
    logits = logits.float()
    log_z = F.logsigmoid(logits).masked_fill(mask, -1e5).to(original_dtype)
    log_beta = F.logsigmoid(-logits).masked_fill(mask, 0).to(original_dtype)
    re_cum_log_beta = torch.einsum("bhij,jk->bhik", log_beta, cum_weight.to(log_beta))
    att = (log_z + re_cum_log_beta).exp()
    return att @ v, 1 - att.sum(dim=-1), att


def sb_reference(q, k, v):
    """tests/test_attn.py of the same repository, ref_fwd with attend_current=False: cm =
    ones(L, L).tril(-1), mask = ones(L, L).triu(0), o = o + rem[..., None] * v. Also returns the
    weights that output mixes the values with: att, and rem on each query's own key."""
    T = q.size(2)
    cm = torch.ones(T, T).tril(-1)
    mask = torch.ones(T, T).triu(0).bool()
    o, rem, att = sb_ref_stickbreaking(q, k, v, mask, cm)
    return o + rem[..., None] * v, att + torch.diag_embed(rem)


@pytest.mark.parametrize("chunk_rows", [None, 3])
def test_stick_breaking_equals_the_reference_forward_and_gradient(chunk_rows, monkeypatch):
    method = tiny_model("stick-breaking").pos
    if chunk_rows is not None:  # query chunks of 3 rows: each row needs only its own keys
        monkeypatch.setattr(attention_module, "PROBE_BUDGET", 2 * 4 * 24 * chunk_rows)
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 4, 24, 8, requires_grad=True) for _ in range(3))
    with torch.no_grad():
        q.mul_(2), k.add_(0.5)
    positions = Positions(0, 24)
    out = causal_attention(q, k, v, method, positions, positions)
    expected, _ = sb_reference(q, k, v)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)
    grads = torch.autograd.grad(out.square().sum(), (q, k, v))
    for got, want in zip(grads, torch.autograd.grad(expected.square().sum(), (q, k, v)), strict=True):
        torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_stick_breaking_model_equals_the_reference_and_the_probe_sees_its_weights():
    model = tiny_model("stick-breaking")
    with torch.no_grad():
        model.blocks[0].attn.qkv.weight.mul_(4)  # sharp logits: some rows spend the whole stick
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    expected_weights = {}

    def attend(layer, h, q, k, v):
        out, weights = sb_reference(q, k, v)
        expected_weights[layer] = weights
        return out

    with torch.no_grad():
        expected = hand_forward(model, idx, attend)
        torch.testing.assert_close(model(idx), expected, atol=1e-5, rtol=1e-4)
    seen = {}
    probe(model, idx, lambda layer, start, p: seen.setdefault(layer, p))
    for layer, weights in expected_weights.items():
        torch.testing.assert_close(seen[layer], weights, atol=1e-6, rtol=1e-4)
        # the stick: the reference's weights and remainder add up to one, and the own key holds the rest
        torch.testing.assert_close(seen[layer].sum(-1), torch.ones(2, 4, 20))
    assert seen[0].diagonal(dim1=-2, dim2=-1)[..., 0].eq(1).all(), "the first query keeps its whole stick"


# ----------------------------------------------------------------------------- both: chunks, cache, runs


@pytest.mark.parametrize("pos", CONTENT_METHODS)
def test_chunked_evaluation_of_a_long_window_equals_one_pass(pos, monkeypatch):
    """150 tokens, past L = 32 (CoPE's positions clamp at 32): chunks of 7 query rows equal one block."""
    model = tiny_model(pos)
    tokens = np.random.default_rng(0).integers(0, 64, 400).astype(np.uint16)
    x = torch.from_numpy(tokens[:300].astype(np.int64)).view(2, 150)
    byte_counts = np.ones(64, dtype=np.int64)
    with torch.inference_mode():
        full = model(x)
        [whole] = evaluate_lengths(model, tokens, byte_counts, [150], max_tokens=300)
    monkeypatch.setattr(attention_module, "PROBE_BUDGET", 2 * 4 * 150 * 7)
    with torch.inference_mode():
        torch.testing.assert_close(model(x), full, atol=1e-5, rtol=1e-5)
        [parts] = evaluate_lengths(model, tokens, byte_counts, [150], max_tokens=300)
    assert math.isfinite(whole.loss) and parts.loss == pytest.approx(whole.loss, abs=1e-6)


@pytest.mark.parametrize("pos", CONTENT_METHODS)
def test_content_methods_read_no_position_ids_and_never_take_a_fused_kernel(pos):
    method = METHODS[pos](tiny_config(pos))
    layer = method.for_layer(0)
    assert layer.content_dependent and not layer.has_score_bias and layer.encodes_positions


@pytest.mark.parametrize("pos", CONTENT_METHODS)
def test_a_content_method_trains_resumes_and_evaluates(pos, corpus, tmp_path, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, pos, steps=6, save_every=3)
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False)
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=5)
    assert resumed.resumed_from == 4
    assert losses(resumed.run_dir) == losses(whole.run_dir)
    config = json.loads((whole.run_dir / "config.json").read_text())
    assert RunConfig.from_json(config).label == pos
    report, _ = evaluate_run(whole.run_dir, EvalSettings(lengths=[16, 64], max_tokens=256))
    assert report["label"] == pos and all(math.isfinite(r["ppl"]) for r in report["results"])


@pytest.mark.parametrize("pos", CONTENT_METHODS)
def test_a_bf16_autocast_step_is_finite_and_near_fp32(pos):
    """`--precision bf16` on the CPU: under autocast the table's product comes out bf16, while CoPE's
    positions and stick-breaking's sums stay float32."""
    model = tiny_model(pos).train()
    idx = torch.randint(0, 64, (2, 20), generator=torch.Generator().manual_seed(0))
    expected = F.cross_entropy(model(idx).flatten(0, 1), idx.flatten())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = F.cross_entropy(model(idx).float().flatten(0, 1), idx.flatten())
    loss.backward()
    assert abs(loss.item() - expected.item()) < 2e-2
    assert all(p.grad is not None and p.grad.isfinite().all() for p in model.parameters())
