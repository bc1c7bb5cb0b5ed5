"""CoPE, contextual position encoding (Golovneva et al. 2024, "Contextual Position Encoding: Learning
to Count What's Important"; facebookresearch/RAM `projects/cope/src/cope/context_position.py`).

A position counts the keys the query's gates let through: g_ij = sigmoid(q_i . k_j / sqrt(d_h)) on the
keys the query may see (0 elsewhere, the reference's `gates * attn_mask`), p_ij = sum_{t=j..i} g_it
(the reversed cumulative sum), clamped at npos - 1. A position between two integers interpolates the
logits of a learned embedding per integer position: z_ij = (1 - w) q_i . e[floor p] + w q_i . e[ceil p],
w = p - floor p, and the logit gains z_ij / sqrt(d_h) (the reference adds it before dividing by
sqrt(d_h), its default without --cope-nodiv). One table e (d_h, npos) per layer, shared by the layer's
heads, zeros at init (the reference's `pos_emb`); npos = L + 1 (the reference's default, block size + 1:
position 0 to L). Past L positions saturate at L: a count of L or more gated keys reads e[L]. The
gates use the attention's own keys (the reference's default, no --cope-sep-key). Positions come from
the content, never from position ids."""

from __future__ import annotations

import math

import torch
from torch import nn

from .base import PositionMethod


class CopeLayer(PositionMethod):
    """One layer's position table and its contextual positions."""

    name = "cope-layer"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.npos = config.train_len + 1  # positions 0..L (RAM: block_size + 1 when --cope-npos is unset)
        self.table = nn.Parameter(torch.zeros(self.head_dim, self.npos))  # RAM: zeros(1, head_dim, npos)

    def content_bias(self, q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor
                     ) -> torch.Tensor:
        gates = torch.sigmoid(scores.float()) * allowed  # masked keys count nothing
        positions = gates.flip(-1).cumsum(-1).flip(-1).clamp(max=self.npos - 1)  # p_ij = sum_{t >= j} g_it
        # (B, H, Tq, npos): q_i . e[n] / sqrt(d_h) for every integer position n (divided here, on the
        # small table, rather than on the (Tq, Tk) logits as the reference does: the same sum); in
        # float32 whatever autocast made of the product, as the positions are
        fixed = (q @ self.table.to(q.dtype)).float() / math.sqrt(self.head_dim)
        floor = positions.floor()
        low = fixed.gather(-1, floor.long())  # the indices take no gradient, as the reference's
        high = fixed.gather(-1, positions.ceil().long())
        # (1 - w) low + w high, w = p - floor p: differentiable in p, so the gradient reaches the gates
        return torch.lerp(low, high, positions - floor).to(scores.dtype)


class CopePosition(PositionMethod):
    name = "cope"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.layers = nn.ModuleList(CopeLayer(config) for _ in range(config.n_layer))

    def for_layer(self, layer: int) -> PositionMethod:
        return self.layers[layer]
