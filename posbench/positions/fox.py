"""FoX, the Forgetting Transformer (Lin et al., ICLR 2025; zhixuan-lin/forgetting-transformer
`modeling_forgetting_transformer.py`, fla-org/flash-linear-attention `fla/layers/forgetting_attn.py`):
no position embedding; each layer has a forget gate per head from its input,
log f_t = logsigmoid(w . x_t + b) (a Linear d_model -> heads with bias, computed in float32), and
the score of key j for query i gains sum_{l=j+1..i} log f_l (zero on the diagonal; fla
`ops/forgetting_attn/naive.py`). Basic FoX ("LLaMA" in the paper): no output gate, QK-norm or
token shift (those make FoX Pro). Init as the references: weight N(0, 0.02), bias 0, so f = 1/2
at first. Attention adds the decay as a per-key channel (decay.py)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import EMBED_INIT_STD, PositionMethod


class ForgetGate(PositionMethod):
    """One layer's gate."""

    name = "fox-gate"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.proj = nn.Linear(config.d_model, config.n_head, bias=True)
        nn.init.normal_(self.proj.weight, std=EMBED_INIT_STD)
        nn.init.zeros_(self.proj.bias)

    def log_decay(self, x: torch.Tensor) -> torch.Tensor:
        return F.logsigmoid(self.proj(x).float()).transpose(1, 2)  # (B, H, T)


class FoxPosition(PositionMethod):
    name = "fox"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.gates = nn.ModuleList(ForgetGate(config) for _ in range(config.n_layer))

    def for_layer(self, layer: int) -> PositionMethod:
        return self.gates[layer]
