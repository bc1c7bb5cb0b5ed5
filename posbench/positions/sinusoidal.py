"""Fixed sinusoidal positions added to the token embeddings (Vaswani et al. 2017, Sec. 3.5).

Vaswani et al. multiply the token embeddings by sqrt(d), which makes them about as large as the
unit sinusoid. Here token embeddings keep GPT-2's init (std 0.02, tied with the output layer), so
the sinusoid is scaled down to that size instead: the same 1:1 ratio of token to position signal.
At full amplitude it would drown the tokens 35:1 and the model learns slowly (seen in practice)."""

import math

import torch

from .base import EMBED_INIT_STD, PositionMethod, sinusoid_table

AMPLITUDE = EMBED_INIT_STD * math.sqrt(2)  # the sinusoid's RMS (1/sqrt 2) equals the embeddings' std


class SinusoidalPosition(PositionMethod):
    name = "sinusoidal"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.d_model = config.d_model

    def encoding(self, start: int, T: int, device, dtype) -> torch.Tensor:
        """(T, D) table for positions start .. start+T-1, memoised per window."""
        key = ("pe", start, T, device, dtype)
        return self.cached(key, lambda: sinusoid_table(torch.arange(start, start + T, device=device),
                                                       self.d_model).to(dtype))

    def embed(self, x: torch.Tensor, start: int) -> torch.Tensor:
        return x + AMPLITUDE * self.encoding(start, x.size(1), x.device, x.dtype)
