"""KERPLE, log variant (Chi et al. 2022, "KERPLE: Kernelized Relative Positional Embedding for
Length Extrapolation", the logarithmic kernel, KERPLE-log): each head adds -r1 * log(1 + r2 * |i - j|)
to the score of key j for query i, with r1, r2 > 0 learned per head.

The paper's code keeps r1, r2 >= 0.01 by clamping the parameters in place after each step; here
r = 0.01 + softplus(raw), positive by construction and with a gradient everywhere. Initial values as
in the paper's code: r1 ~ U(0, 2), r2 ~ U(0, 1)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import PositionMethod, relative_distance

FLOOR = 1e-2  # smallest r1, r2 (the paper's code clamps both to min 0.01)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y (y > 0): log(exp(y) - 1), written stably."""
    return y + torch.log(-torch.expm1(-y))


class KerplePosition(PositionMethod):
    name = "kerple"
    shift_invariant = True

    def __init__(self, config) -> None:
        super().__init__(config)
        H = config.n_head
        r1 = (2 * torch.rand(H)).clamp(min=2 * FLOOR)  # U(0, 2), as the paper's bias_p
        r2 = torch.rand(H).clamp(min=2 * FLOOR)  # U(0, 1), as the paper's bias_a
        self.r1_raw = nn.Parameter(inverse_softplus(r1 - FLOOR))  # (H,)
        self.r2_raw = nn.Parameter(inverse_softplus(r2 - FLOOR))  # (H,)

    @property
    def r1(self) -> torch.Tensor:
        """(H,) the kernel's scale, >= 0.01."""
        return FLOOR + F.softplus(self.r1_raw)

    @property
    def r2(self) -> torch.Tensor:
        """(H,) the kernel's distance scale, >= 0.01."""
        return FLOOR + F.softplus(self.r2_raw)

    def score_bias(self, q_len: int, k_len: int, start: int) -> torch.Tensor:
        device = self.r1_raw.device

        def build():  # future keys (negative distance) are masked anyway; 0 keeps log1p finite
            return relative_distance(q_len, k_len, start, device).clamp(min=0).float()  # (q, k)

        distance = self.cached(("kerple", q_len, k_len, start, device), build)
        # the parameters change every step, so only the distances are memoised
        return -self.r1[:, None, None] * torch.log1p(self.r2[:, None, None] * distance[None])  # (H, q, k)

    def describe(self, length: int) -> dict:
        """Per head r1 (the bias's depth) and r2 (how soon it bends) of -r1 log(1 + r2 d)."""
        pairs = list(zip(self.r1.tolist(), self.r2.tolist(), strict=True))
        return {"kerple": [{"head": h, "r1": r1, "r2": r2} for h, (r1, r2) in enumerate(pairs)],
                "column": "r1 / r2", "head_labels": [f"{r1:.3g} / {r2:.3g}" for r1, r2 in pairs]}
