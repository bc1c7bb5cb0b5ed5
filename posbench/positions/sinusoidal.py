"""Fixed sinusoidal positions added to the token embeddings (Vaswani et al. 2017, Sec. 3.5).

Vaswani et al. (and fairseq, the ALiBi paper's baselines) initialise token embeddings with std
d^-1/2 and multiply them by sqrt(d): tokens of std 1 against a sinusoid of RMS 1/sqrt(2), so
position : token = 0.71 at init. Here token embeddings keep GPT-2's init (std 0.02, tied with the
output layer), so the sinusoid is scaled to that size instead, keeping the reference's ratio
(ModelConfig.sinusoid_ratio, default 1/sqrt(2); legacy runs used 1.0). At full amplitude it
would drown the tokens 35:1 and the model learns slowly (seen in practice)."""

import math

import torch

from .base import EMBED_INIT_STD, PositionMethod, sinusoid_table
from .ids import Positions

SINUSOID_RMS = 1 / math.sqrt(2)  # of a unit sin/cos table, over positions and channels


class SinusoidalPosition(PositionMethod):
    name = "sinusoidal"
    settings = ("sinusoid_ratio",)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.d_model = config.d_model
        # scale so RMS(PE) = ratio * std(tokens at init)
        self.amplitude = config.sinusoid_ratio * EMBED_INIT_STD / SINUSOID_RMS

    def encoding(self, positions: Positions, device, dtype) -> torch.Tensor:
        """(T, D) table for `positions`, memoised per window (start, length) of a range."""
        return self.cached(("pe", device, dtype),
                           lambda: sinusoid_table(positions.tensor(device), self.d_model).to(dtype), positions)

    def embed(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        return x + self.amplitude * self.encoding(positions, x.device, x.dtype)
