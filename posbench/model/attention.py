"""Causal attention with a position method's score bias: the one attention function of the model.

causal_attention picks the fastest path that gives the same result, in this order:
  - a probe watches, or the method's weights depend on content beyond q.k (a bias from q and k,
    CoPE; a normaliser other than the softmax, stick-breaking): explicit_attention writes the weights
    out, one query chunk at a time;
  - a local mask (sliding window, chunks): a float mask per query chunk over the keys it may see;
  - no bias, queries = keys: SDPA's causal kernel;
  - CUDA with a bias, head dim >= 16: FlexAttention adds the bias inside the kernel (flex.py),
    read from the per-distance vector below where the bias is of i - j alone;
  - a bias of i - j alone at consecutive positions, with no gradient to it (ALiBi; T5 and KERPLE at
    evaluation): the keys reversed, every query chunk's mask is a Hankel view of one (H, Tq + Tk - 1)
    vector of per-distance values, read by SDPA's fused kernel with no (Tq, Tk) tensor anywhere
    (biased_attention.hankel_attention, in query chunks that skip future keys);
  - the same bias with a gradient (T5 and KERPLE in training), on the CPU: DiagonalBiasedAttention,
    SDPA's fused forward over that Hankel view and a row-blocked backward that skips future keys and
    sums the bias gradient per distance;
  - another bias the loss differentiates (FIRE in training, any at explicit ids), on the CPU:
    BiasedAttention, the same over a (H, Tq, Tk) float mask;
  - otherwise: a float mask per query chunk, at most MASK_BUDGET elements each.
Every fast path is tested against the plain masked softmax (tests/test_attention.py), forward and gradient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ..positions import PositionMethod, Positions
from .biased_attention import (
    BiasedAttention,
    DiagonalBiasedAttention,
    fused_cpu_kernel,
    hankel_attention,
    join_query_chunks,
)
from .flex import MIN_HEAD_DIM, flex_attention, flex_biased_attention, flex_diagonal_attention

# Largest float mask (elements, 128 MB of float32) one attention call may hold; longer inputs are cut
# into query chunks so memory grows linearly with length instead of quadratically. Larger chunks
# keep SDPA's CPU kernel in its larger query blocks: at 16k tokens FIRE took 1.8x rotary's time with
# this, 2.1x with half of it.
MASK_BUDGET = 1 << 25
# Largest probability block (B, H, chunk, keys) the explicit path holds at once while a probe watches;
# probes make a few temporaries of the same size from it, so this bounds memory at a few times 16 MiB.
PROBE_BUDGET = 1 << 22
# A probe's callback: (layer, first query position of the chunk, p: (B, H, chunk, keys) probabilities)
Visit = Callable[[int, int, torch.Tensor], None]


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
    visit: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Causal attention for queries at q_pos over keys at k_pos, plus the method's score bias; the
    queries are the last Tq of the keys (query r sees keys 0 .. Tk-Tq+r). q: (B, H, Tq, hd), k/v:
    (B, H, Tk, hd) -> (B, H, Tq, hd). With `visit` (a probe), each chunk's probabilities go to
    visit(index of the chunk's first query among the keys, p)."""
    Tq, Tk = q.size(2), k.size(2)
    if visit is not None or pos.content_dependent:
        return explicit_attention(q, k, v, pos, q_pos, k_pos, visit)
    if pos.local is not None:
        return _chunks(q, k, v, pos, q_pos, k_pos, _masked_sdpa)
    if Tq == Tk and not pos.has_score_bias:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    if q.is_cuda and pos.has_score_bias and flex_attention is not None and q.size(-1) >= MIN_HEAD_DIM:
        if pos.shift_invariant and q_pos.is_range and k_pos.is_range:
            return flex_diagonal_attention(q, k, v, distance_vector(pos, q_pos, k_pos, torch.float32))
        return _chunks(q, k, v, pos, q_pos, k_pos, _flex_sdpa)
    compiling = torch.compiler.is_compiling()  # a compiled graph fuses the plain path itself
    bias_learns = pos.has_score_bias and torch.is_grad_enabled() and any(p.requires_grad for p in pos.parameters())
    fused_backward = fused_cpu_kernel(q) and not compiling  # the biased attention functions' condition
    if pos.shift_invariant and q_pos.is_range and k_pos.is_range and not compiling:
        diagonal = distance_vector(pos, q_pos, k_pos, q.dtype)
        if not bias_learns:
            return hankel_attention(q, k, v, diagonal)
        if fused_backward:
            return DiagonalBiasedAttention.apply(q, k, v, diagonal)
    if bias_learns and fused_backward and q.size(1) * Tq * Tk <= MASK_BUDGET:
        return BiasedAttention.apply(q, k, v, causal_mask(pos, q_pos, k_pos, q.device, q.dtype))
    return _chunks(q, k, v, pos, q_pos, k_pos, _masked_sdpa)


def prefill_rows(pos: PositionMethod, batch: int, n_head: int, length: int) -> int:
    """Query rows per forward pass for scoring `length` tokens without gradient. A method whose bias
    is built per (query, key) (not shift-invariant: FIRE) would build each query chunk's bias once
    per layer; fed through the KV cache this many rows at a time, whose whole mask fits MASK_BUDGET,
    each chunk's bias is built once per forward pass and shared by all layers. Others: all rows."""
    if not pos.has_score_bias or pos.shift_invariant:
        return length
    return min(length, mask_rows(batch, n_head, length))


def mask_rows(batch: int, n_head: int, keys: int) -> int:
    """Query rows whose (B, H, rows, keys) float mask stays within MASK_BUDGET (at least one)."""
    return max(1, MASK_BUDGET // (batch * n_head * keys))


def _chunks(q, k, v, pos: PositionMethod, q_pos: Positions, k_pos: Positions, attend) -> torch.Tensor:
    """The general path: query chunks whose (H, c, k) masks hold at most MASK_BUDGET elements in all,
    each over the keys it may see: up to its last query (later keys are all in its future), from the
    first key of its first query's local span (a window or chunk; else key 0: the first key of a span
    is a chunk boundary, and a window depends on i - j alone, so the mask reads the same from there).
    attend(qc, kc, vc, pos, qc_pos, kc_pos) -> (B, H, c, hd)."""
    B, H, Tq, _ = q.shape
    Tk = k.size(2)
    offset = Tk - Tq  # index of the first query among the keys
    chunk = min(Tq, mask_rows(B, H, Tk))
    out = []
    for s in range(0, Tq, chunk):
        qc = q[:, :, s : s + chunk]  # (B, H, c, hd)
        k_len = min(Tk, offset + s + qc.size(2))
        first = 0 if pos.local is None else pos.local.first_key(offset + s)
        qc_pos, kc_pos = q_pos.slice(s, qc.size(2)), k_pos.slice(first, k_len - first)
        out.append(attend(qc, k[:, :, first:k_len], v[:, :, first:k_len], pos, qc_pos, kc_pos))
    return join_query_chunks(out)


def _masked_sdpa(q, k, v, pos: PositionMethod, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
    """SDPA with causal_mask's float mask; 4-D: with a 3-D mask CPU SDPA leaves its fused kernel."""
    return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_mask(pos, q_pos, k_pos, q.device, q.dtype)[None])


def _flex_sdpa(q, k, v, pos: PositionMethod, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
    """CUDA: FlexAttention, the bias added inside the kernel (flex.py)."""
    bias = pos.per_pass(("bias",), functools.partial(pos.score_bias, q_pos, k_pos), q_pos, k_pos)
    return flex_biased_attention(q, k, v, bias, k.size(2) - q.size(2))


def distance_vector(pos: PositionMethod, q_pos: Positions, k_pos: Positions, dtype) -> torch.Tensor:
    """(H, Tq + Tk - 1) the mask of a shift-invariant method at ranges of ids, by diagonal: with the
    keys reversed (j' = Tk-1-j), query r and key j' lie i - j = n + q_start - k_start - (Tk-1) apart,
    n = r + j', and the key is causal (j <= Tk-Tq+r) exactly when n >= Tq-1. Entry n holds the bias
    at that distance, or -inf past the causal limit. Built once per forward pass for all layers."""
    q_len, k_len = len(q_pos), len(k_pos)

    def build() -> torch.Tensor:
        n = torch.arange(q_len + k_len - 1, device=pos.device)
        bias = pos.bias_by_distance(q_pos, k_pos)  # (H, Tq + Tk - 1): entry n at the distance above
        return bias.to(dtype).masked_fill(n < q_len - 1, float("-inf"))

    return pos.per_pass(("diagonals", q_len, k_len, dtype), build, q_pos, k_pos)


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
    visit: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """causal_attention with scores, mask, weights and p @ v written out, one query chunk at a time,
    so a probe sees the probabilities SDPA never materialises: visit(offset + s, p), p: (B, H, c, k)
    over the chunk's keys 0..k-1 (later keys are all in its future), offset + s the index of the
    chunk's first query among the keys. Same output as SDPA's path; the only path of a method whose
    weights need more than q.k and a bias (attention_weights)."""
    B, H, Tq, hd = q.shape
    Tk = k.size(2)
    offset = Tk - Tq
    chunk = max(1, PROBE_BUDGET // (B * H * Tk))
    starts = range(0, Tq, chunk)
    out = {}
    # a probe reads the chunks in order; otherwise the last (widest) first, so every later chunk's
    # temporaries fit in the memory the earlier ones freed (growing sizes fragment malloc's heap:
    # CoPE's 16k window peaked at 4.9 GB of RSS in order, 0.9 GB widest first; 0.7 GB live)
    for s in starts if visit is not None else reversed(starts):
        qc = q[:, :, s : s + chunk]  # (B, H, c, hd)
        c = qc.size(2)
        k_len = min(Tk, offset + s + c)
        scores = qc @ k[:, :, :k_len].transpose(-2, -1) / math.sqrt(hd)  # (B, H, c, k)
        mask = causal_mask(pos, q_pos.slice(s, c), k_pos.slice(0, k_len), q.device, q.dtype)  # (H|1, c, k)
        p = attention_weights(pos, qc, k[:, :, :k_len], scores, mask)
        if visit is not None:
            visit(offset + s, p)
        out[s] = p @ v[:, :, :k_len]  # (B, H, c, hd)
    return join_query_chunks([out[s] for s in starts])


def attention_weights(pos: PositionMethod, q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor,
                      mask: torch.Tensor) -> torch.Tensor:
    """(B, H, c, k) weights of queries q (the last c of keys k) from their scores q.k / sqrt(hd) and
    causal_mask's float mask: the softmax, or the method's content bias and normaliser (base.py)."""
    if not pos.content_dependent:
        return torch.softmax(scores + mask, dim=-1)
    allowed = mask != float("-inf")  # (H|1, c, k): the keys each query may see
    bias = pos.content_bias(q, k, scores, allowed)
    return pos.attention_weights(scores + mask if bias is None else scores + bias + mask, allowed)


def causal_mask(pos: PositionMethod, q_pos: Positions, k_pos: Positions, device, dtype) -> torch.Tensor:
    """(H or 1, Tq, Tk) float mask for queries at q_pos, the last Tq of the keys at k_pos: the
    method's score bias, -inf on future keys (by sequence order) and on keys outside a local span
    (the first key taken as a chunk boundary: see _chunks). Built once per forward pass and shared by
    the layers that share the method (the bias table is shared by them, too)."""
    q_len, k_len = len(q_pos), len(k_pos)

    def build() -> torch.Tensor:
        bias = pos.score_bias(q_pos, k_pos)  # a new tensor (the interface's promise), so filled in place
        mask = torch.zeros(1, q_len, k_len, device=device, dtype=dtype) if bias is None else bias.to(dtype)
        # future keys lie in the last Tq columns only: key Tk-Tq+c is in query r's future when c > r
        future = pos.cached(("future", q_len, device),
                            lambda: torch.ones(q_len, q_len, dtype=torch.bool, device=device).triu(1))  # (q, q)
        mask[..., k_len - q_len :].masked_fill_(future, float("-inf"))
        if pos.local is not None:
            keys = torch.arange(k_len, device=device)
            mask.masked_fill_(pos.local.hidden(keys[k_len - q_len :], keys), float("-inf"))
        return mask

    return pos.per_pass(("mask", q_len, k_len, device, dtype), build, q_pos, k_pos)
