"""Scalable-Softmax (Nakanishi 2025, "Scalable-Softmax Is Superior for Attention", arXiv 2501.19399):
softmax over n keys with base n^s, i.e. the logits times s log n, s learned per layer and head.
n is the number of keys the query attends: i + 1 under the causal mask (the reading of the
unofficial causal implementations, e.g. axolotl's FlexAttention patch), min(i + 1, window) under a
sliding window. The paper's Figure 1 uses s = 0.43, the init of the unofficial implementations
(gdevos010/Scalable-Softmax `scalable_softmax.py`); no official code was published. The variant
with a bias (s log n + b) is left out: the paper drops it."""

from __future__ import annotations

import torch
from torch import nn

from .temperature import Temperature, query_index

S_INIT = 0.43


class ScalableSoftmax(Temperature):
    name = "ssmax"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.s = nn.Parameter(torch.full((config.n_head,), S_INIT))  # (H,)

    def forward(self, q: torch.Tensor, method, keys: int) -> torch.Tensor:
        index = query_index(q.size(2), keys, q.device)  # (Tq,)
        seen = index + 1 if method.local is None else method.local.keys_seen(index)
        factor = self.s[:, None] * seen.float().log()[None, :]  # (H, Tq)
        return q * factor[..., None].to(q.dtype)  # (B, H, Tq, hd)
