"""Rotary position embedding (Su et al. 2021, RoFormer, Eq. 34): rotate each pair of q/k channels
by an angle proportional to the position, so q_m . k_n depends only on m - n."""

import torch

from .base import PositionMethod


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) on the two halves of the last dimension (the GPT-NeoX pairing)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class RotaryPosition(PositionMethod):
    name = "rotary"
    base = 10000.0

    def __init__(self, config) -> None:
        super().__init__(config)
        assert self.head_dim % 2 == 0, "rotary needs an even head dimension"

    def inv_freq(self, device) -> torch.Tensor:
        """(hd/2,) theta_i = base^(-2i/hd)."""
        return self.base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device)
                             / self.head_dim)

    def cos_sin(self, start: int, T: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, hd) cos and sin for positions start .. start+T-1, computed for any length."""

        def build():
            positions = torch.arange(start, start + T, device=device, dtype=torch.float32)
            angles = positions[:, None] * self.inv_freq(device)[None, :]  # (T, hd/2)
            angles = torch.cat((angles, angles), dim=-1)  # (T, hd): same angle for both halves
            return torch.stack((angles.cos(), angles.sin())).to(dtype)

        cos, sin = self.cached(("rope", start, T, device, dtype), build)
        return cos, sin

    def rotate(self, q: torch.Tensor, k: torch.Tensor, start: int) -> tuple[torch.Tensor, torch.Tensor]:
        cos, sin = self.cos_sin(start, q.size(-2), q.device, q.dtype)  # (T, hd) each
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        return q, k
