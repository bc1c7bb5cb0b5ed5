"""Llama 4's attention temperature tuning for NoPE layers (HF transformers `modeling_llama4.py`,
`Llama4TextAttention.forward`, attn_temperature_tuning): in a layer without position information,
the query at sequence index i (0-based, `cache_position`) is multiplied by
1 + attn_scale * log(1 + floor((i + 1) / floor_scale)); layers that encode positions are left alone.
Llama 4: attn_scale 0.1, floor_scale 8,192 = its attention chunk size. posbench scales the floor to
the training length as the chunk: ModelConfig.window (None: half the training length)."""

from __future__ import annotations

import torch

from .hybrid import local_span
from .temperature import Temperature, query_index

ATTN_SCALE = 0.1


class Llama4Temperature(Temperature):
    name = "llama4"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.floor_scale = local_span(config)

    def forward(self, q: torch.Tensor, method, keys: int) -> torch.Tensor:
        if method.encodes_positions:
            return q
        index = query_index(q.size(2), keys, q.device).float()  # (Tq,)
        scale = torch.log1p(torch.floor((index + 1) / self.floor_scale)) * ATTN_SCALE + 1
        return q * scale[:, None].to(q.dtype)  # (B, H, Tq, hd)
