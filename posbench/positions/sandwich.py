"""Sandwich (Chi et al. 2023, "Dissecting Transformer Length Extrapolation via the Lens of Receptive
Field Analysis", Sec. 5): no position embedding and no parameter; the score of key j for query i
gains the inner product of the sinusoidal embeddings of i and j, sum_k cos((i - j) theta_k) over the
head dim's d/2 frequencies theta_k = 10000^(-2k/d), k = 1 .. d/2, less its value at distance 0 (d/2),
divided per head h = 1 .. H by 8h/H (as ALiBi's slopes spread the heads' reach). Reference: NVIDIA
NeMo `nemo/collections/nlp/modules/common/megatron/position_embedding/sandwich_relative_position_embedding.py`
(hidden_size = the head dim, as NeMo's GPT passes it)."""

from __future__ import annotations

import torch

from .base import PositionMethod


class SandwichPosition(PositionMethod):
    name = "sandwich"

    def __init__(self, config) -> None:
        super().__init__(config)
        d = self.head_dim
        # k = 1 .. d/2, as the reference's arange(1, d/2 + 1): the k = 0 term (a constant 1) is left out
        self.register_buffer("inv_freq", 10000.0 ** (-2 * torch.arange(1, d // 2 + 1, dtype=torch.float32) / d),
                             persistent=False)  # (d/2,)
        heads = torch.arange(1, self.n_head + 1, dtype=torch.float32)
        self.register_buffer("head_scale", heads * 8 / self.n_head, persistent=False)  # (H,)

    def distance_bias(self, distance: torch.Tensor) -> torch.Tensor:
        d = distance.abs().float()  # the reference's |i - j| (future keys are masked anyway)
        total = torch.zeros_like(d)
        for theta in self.inv_freq:  # one frequency at a time: no (*distance.shape, d/2) temporary
            total += torch.cos(d * theta)
        scale = self.head_scale.view(-1, *[1] * distance.dim())  # (H, 1, ...)
        return (total - self.head_dim / 2)[None] / scale  # (H, *distance.shape)

    def describe(self, length: int) -> dict:
        bias = self.distance_bias(torch.tensor([length - 1], device=self.device))[:, 0].tolist()
        return {"column": f"bias at {length - 1}", "head_labels": [f"{b:.3g}" for b in bias]}
