"""attention.py's fast paths against the plain masked softmax, forward and gradient.

The reference is written out here: scores q k^T / sqrt(hd), plus the method's score_bias at the
position ids, -inf on keys after the query in sequence order, softmax, times v. Every path the
dispatcher can pick must give it to fp32 rounding, and the dispatcher must pick the fast path where
one exists (a silent fall-back to the slow path would pass every equality test)."""

from __future__ import annotations

import pytest
import torch

from posbench.model import attention, biased_attention
from posbench.model.attention import causal_attention
from posbench.model.biased_attention import BiasedAttention, DiagonalBiasedAttention
from posbench.positions import METHODS, Positions

from .helpers import tiny_model

BIAS_METHODS = [name for name in sorted(METHODS) if tiny_model(name).pos.has_score_bias]
SHIFT_INVARIANT = [name for name in BIAS_METHODS if tiny_model(name).pos.shift_invariant]
LEARNED_BIAS = [name for name in BIAS_METHODS if any(True for _ in tiny_model(name).pos.parameters())]


def reference_attention(q, k, v, method, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
    """softmax(q k^T / sqrt(hd) + bias + causal -inf) v, the queries the last Tq of the keys."""
    Tq, Tk = q.size(2), k.size(2)
    bias = method.score_bias(q_pos, k_pos)  # (H, Tq, Tk)
    future = torch.arange(Tk)[None, :] > torch.arange(Tk - Tq, Tk)[:, None]  # (Tq, Tk)
    scores = q @ k.transpose(-2, -1) / q.size(-1) ** 0.5 + bias.masked_fill(future, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def qkv(q_len: int, k_len: int, requires_grad: bool = False):
    torch.manual_seed(1)
    q = torch.randn(2, 4, q_len, 8, requires_grad=requires_grad)
    k, v = (torch.randn(2, 4, k_len, 8, requires_grad=requires_grad) for _ in range(2))
    return q, k, v


def count_calls(monkeypatch, owner, name: str) -> list:
    """Wrap owner.name so the test can see that the path was taken."""
    calls, original = [], getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(1)
        return original(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


@pytest.mark.parametrize("pos", SHIFT_INVARIANT)
@pytest.mark.parametrize(("q_len", "k_len", "q_start", "k_start"), [(30, 30, 0, 0), (19, 30, 11, 0), (5, 30, 40, 15)])
def test_hankel_path_equals_the_masked_softmax(pos, q_len, k_len, q_start, k_start, monkeypatch):
    """A bias of i - j alone that needs no gradient (ALiBi; T5 and KERPLE at evaluation, or frozen):
    the keys reversed, each chunk's mask a strided view of one per-diagonal vector. Whole, in chunks
    of 7 queries, with queries mid-window (a KV cache) and with key ids that do not start at 0 (a
    window deep in a long text); output and the gradients of q, k, v (training ALiBi)."""
    method = tiny_model(pos).pos.requires_grad_(False)
    q_pos, k_pos = Positions(q_start, q_len), Positions(k_start, k_len)
    calls = count_calls(monkeypatch, attention, "hankel_attention")
    for chunk in (1024, 7):  # with gradients, as here, the training chunk is taken
        monkeypatch.setattr(biased_attention, "TRAINING_CHUNK", chunk)
        results = []
        for run in (causal_attention, reference_attention):
            q, k, v = qkv(q_len, k_len, requires_grad=True)
            out = run(q, k, v, method, q_pos, k_pos)
            weights = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
            results.append((out, *torch.autograd.grad((out * weights).sum(), [q, k, v])))
        for got, want in zip(*results, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert len(calls) == 2, "a shift-invariant bias without gradient left the Hankel path"


@pytest.mark.parametrize("pos", LEARNED_BIAS)
@pytest.mark.parametrize(("q_len", "k_len"), [(30, 30), (19, 30)])
@pytest.mark.parametrize("group_budget", [biased_attention.GROUP_BUDGET, 1], ids=["whole batch", "one by one"])
def test_biased_attention_equals_the_masked_softmax_forward_and_gradient(pos, q_len, k_len, group_budget,
                                                                         monkeypatch):
    """Training a learned bias on the CPU: SDPA's fused forward (in query chunks of 8 here) and the
    row-blocked backward (blocks of 5 rows, the last one short; the batch at once, or one element at
    a time, each adding its share of the bias's gradient) give the reference's output and the
    gradients of q, k, v and of every parameter of the method. A bias of i - j alone (T5, KERPLE)
    takes the per-diagonal form, with no (Tq, Tk) mask; any other (FIRE) the dense mask."""
    monkeypatch.setattr(biased_attention, "ROW_BLOCK", 5)
    monkeypatch.setattr(biased_attention, "TRAINING_CHUNK", 8)  # the forward in query chunks, too
    monkeypatch.setattr(biased_attention, "GROUP_BUDGET", group_budget)
    method = tiny_model(pos).pos.train()
    params = list(method.parameters())
    q_pos, k_pos = Positions(k_len - q_len, q_len), Positions(0, k_len)
    calls = count_calls(monkeypatch, DiagonalBiasedAttention if method.shift_invariant else BiasedAttention, "apply")
    results = []
    for run in (lambda *a: causal_attention(*a), reference_attention):
        q, k, v = qkv(q_len, k_len, requires_grad=True)
        with method.one_pass():
            out = run(q, k, v, method, q_pos, k_pos)
        weights = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
        results.append((out, *torch.autograd.grad((out * weights).sum(), [q, k, v, *params])))
    assert len(calls) == 1, "training a learned bias left BiasedAttention"
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_biased_attention_gradient_is_exact_where_probabilities_underflow(monkeypatch):
    """A steep bias (slope 30 per token: log-probabilities down to about -870, far below where exp
    underflows, ~-87) and -inf on future keys: the backward's 2^x form of the probabilities gives the
    reference's gradients of q, k, v and of the bias, in row blocks of 7."""
    monkeypatch.setattr(biased_attention, "ROW_BLOCK", 7)
    monkeypatch.setattr(biased_attention, "TRAINING_CHUNK", 8)
    distance = (torch.arange(30)[:, None] - torch.arange(30)[None, :]).float()  # (T, T) i - j
    steep = (-30 * distance.clamp(min=0)).masked_fill(distance < 0, float("-inf")).expand(4, -1, -1)
    check_against_softmax(BiasedAttention.apply, steep, lambda bias: bias, 30, 30)


def check_against_softmax(fast, mask: torch.Tensor, dense, q_len: int, k_len: int) -> None:
    """fast(q, k, v, mask) against softmax(q k^T / sqrt(hd) + dense(mask)) v: the output and the
    gradients of q, k, v and of the mask."""
    results = []
    for run in (fast, lambda q, k, v, m: torch.softmax(q @ k.mT / 8**0.5 + dense(m), -1) @ v):
        q, k, v = qkv(q_len, k_len, requires_grad=True)
        leaf = mask.clone().requires_grad_()
        out = run(q, k, v, leaf)
        weights = torch.randn_like(out, generator=torch.Generator().manual_seed(2))
        results.append((out, *torch.autograd.grad((out * weights).sum(), [q, k, v, leaf])))
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


def test_diagonal_biased_attention_gradient_is_exact_where_probabilities_underflow(monkeypatch):
    """The per-diagonal form under the same steep bias (slope 30 per token, -inf on future keys), with
    19 queries, the last of 30 keys, in row blocks of 7: output and the gradients of q, k, v and of
    the per-diagonal vector (entry n: query r, key j, n = r + Tk - 1 - j), against the dense softmax
    with the mask gathered from the vector."""
    monkeypatch.setattr(biased_attention, "ROW_BLOCK", 7)
    monkeypatch.setattr(biased_attention, "TRAINING_CHUNK", 8)
    q_len, k_len = 19, 30
    n = torch.arange(q_len + k_len - 1)
    distance = (n - (q_len - 1)).float()  # i - j of entry n (query r is key k_len - q_len + r)
    vector = -30 * distance.clamp(min=0) + torch.randn(4, n.numel(), generator=torch.Generator().manual_seed(3))
    vector = vector.masked_fill(distance < 0, float("-inf"))  # (H, Tq + Tk - 1)
    gather = torch.arange(q_len)[:, None] + (k_len - 1) - torch.arange(k_len)[None, :]  # (Tq, Tk): n of (r, j)
    check_against_softmax(DiagonalBiasedAttention.apply, vector, lambda diagonal: diagonal[:, gather], q_len, k_len)


@pytest.mark.parametrize("pos", [name for name in LEARNED_BIAS if name in SHIFT_INVARIANT])
def test_a_learned_bias_of_distance_trains_with_no_dense_mask(pos, monkeypatch):
    """T5 and KERPLE in training build no (Tq, Tk) mask at all, so no mask budget limits their window
    (a budget of one element here): the per-distance path takes them, causal_mask is never called."""
    monkeypatch.setattr(attention, "MASK_BUDGET", 1)
    method = tiny_model(pos).pos.train()
    diagonal, dense = (count_calls(monkeypatch, owner, name)
                       for owner, name in ((DiagonalBiasedAttention, "apply"), (attention, "causal_mask")))
    q, k, v = qkv(12, 12, requires_grad=True)
    with method.one_pass():
        causal_attention(q, k, v, method, Positions(0, 12), Positions(0, 12)).sum().backward()
    assert len(diagonal) == 1 and not dense


def test_biased_attention_is_not_taken_without_a_gradient_to_the_bias(monkeypatch):
    """ALiBi's fixed slopes need no mask gradient: SDPA's own fused backward serves it."""
    method = tiny_model("alibi").pos.train()
    calls = [count_calls(monkeypatch, path, "apply") for path in (BiasedAttention, DiagonalBiasedAttention)]
    q, k, v = qkv(12, 12, requires_grad=True)
    with method.one_pass():
        causal_attention(q, k, v, method, Positions(0, 12), Positions(0, 12)).sum().backward()
    assert calls == [[], []] and q.grad is not None


@pytest.mark.parametrize("pos", BIAS_METHODS)
def test_explicit_ids_take_the_dense_mask_and_agree(pos):
    """Explicit (random) ids are no range: the mask is built densely from them; the same ids as a
    range must give the same attention through whichever fast path the range takes."""
    method = tiny_model(pos).pos
    q, k, v = qkv(12, 12)
    ids = Positions.explicit(torch.arange(5, 17))
    with torch.no_grad():
        dense = causal_attention(q, k, v, method, ids, ids)
        ranged = causal_attention(q, k, v, method, Positions(5, 12), Positions(5, 12))
        torch.testing.assert_close(dense, reference_attention(q, k, v, method, ids, ids), rtol=0, atol=1e-5)
    torch.testing.assert_close(ranged, dense, rtol=0, atol=1e-5)
