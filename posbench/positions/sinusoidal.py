"""Fixed sinusoidal positions added to the token embeddings (Vaswani et al. 2017, Sec. 3.5)."""

import torch

from .base import PositionMethod, sinusoid_table


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
        return x + self.encoding(start, x.size(1), x.device, x.dtype)
