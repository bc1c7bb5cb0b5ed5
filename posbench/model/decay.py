"""Data-dependent decay (PositionMethod.log_decay: FoX, Lin et al. 2025) as a term of q and k.

The score of key j for query i gains d_ij = sum_{l=j+1..i} log f_l = c_i - c_j, c the running sum of
log f. Along a query's row c_i is a constant, which the softmax ignores, so the bias is the per-key
term -c_j (the "constant along a row" remark of the FoX paper's Sec. 3). A per-key term is one more
channel of the keys, against a query channel of ones: q' = (q a, sqrt(D)), k' = (k, r - c_j), with
D the widened head dim and a = sqrt(D / hd), so that SDPA's own 1/sqrt(D) gives q.k/sqrt(hd) + r - c_j.
Every path of the one attention function (the fused kernels, the probes' explicit softmax, local
masks, other biases) then applies the decay unchanged, and its gradient reaches c through k'. The
values get zero channels to the same width D (SDPA's fused CPU kernel needs q, k and v of one head
dim, and a multiple of 8: at B 16, H 8, T 256, hd 32 on 2 threads, forward and backward took 1.2x
plain causal attention's time at D = 40, 1.4x at D = 33, 2.8x with only q and k widened, which leaves
the fused kernel), and the output drops them (model.py).

r = c of the last query is subtracted (a constant for every row too) so the added channel stays
small: r - c_j = sum of log f over j+1..last <= 0, with the largest terms on the keys the queries
mostly attend to. Sums are kept in float32, as the reference (fla `naive.py`) does.
"""

from __future__ import annotations

import math

import torch


def decay_sums(log_decay: torch.Tensor, carry: torch.Tensor | None = None) -> torch.Tensor:
    """(B, H, T) log f of new tokens -> (B, H, T, 1) float32 c, the running sums from `carry`
    ((B, H, 1, 1), c of the last cached token; None: the sums start at the first token)."""
    sums = log_decay.float().cumsum(-1).unsqueeze(-1)
    return sums if carry is None else sums + carry


def fold_decay(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, sums: torch.Tensor,
               ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """q (B, H, Tq, hd), the last Tq of keys k and values v (B, H, Tk, hd), the keys' running sums
    (B, H, Tk, 1) -> q', k', v' of width D (hd + 1 rounded up to a multiple of 8) whose attention is
    that of q.k/sqrt(hd) + c_i - c_j (up to a per-row constant) in its first hd channels."""
    hd = q.size(-1)
    width = -(-(hd + 1) // 8) * 8
    term = (sums[:, :, -1:] - sums).to(k.dtype)  # (B, H, Tk, 1): r - c_j

    def widen(x: torch.Tensor, column: torch.Tensor | float) -> torch.Tensor:
        out = x.new_zeros(*x.shape[:-1], width)
        out[..., :hd] = x
        out[..., hd : hd + 1] = column
        return out

    return widen(q * math.sqrt(width / hd), math.sqrt(width)), widen(k, term), widen(v, 0.0)
