"""Attention temperatures: a per-query factor on the logits that composes with any position method
(written --pos METHOD+NAME, e.g. rotary+ssmax). Each layer's attention owns one instance (SSMax
learns its own per layer and head). Like the references, a temperature multiplies the queries, so
every attention path and probe sees it; a method's score bias is added unscaled."""

from __future__ import annotations

import torch
from torch import nn


class Temperature(nn.Module):
    name = "base"

    def __init__(self, config) -> None:  # config: posbench.runs.config.ModelConfig
        super().__init__()

    def forward(self, q: torch.Tensor, method, keys: int) -> torch.Tensor:
        """q: (B, H, Tq, hd), the last Tq of `keys` tokens, in a layer of position method `method`
        (its `local` mask and `encodes_positions` may matter) -> q times the factor, same shape."""
        raise NotImplementedError


def query_index(queries: int, keys: int, device) -> torch.Tensor:
    """(Tq,) the sequence index of each query: the queries are the last Tq of the keys."""
    return torch.arange(keys - queries, keys, device=device)
