"""KERPLE, log variant (Chi et al. 2022, "KERPLE: Kernelized Relative Positional Embedding for
Length Extrapolation", the logarithmic kernel, KERPLE-log): each head adds -r1 * log(1 + r2 * |i - j|)
to the score of key j for query i, with r1, r2 > 0 learned per head.

As the paper's code (chijames/KERPLE, megatron/mpu/layers.py, ParallelKerpleLog): r1 (bias_p) ~
U(0, 2), r2 (bias_a) ~ U(0, 1), raw parameters clamped in place to >= 0.01 before each use. Here the
clamp runs at init and in after_step, right after each optimizer step: the same values at every
forward pass. Legacy runs (ModelConfig.softplus_params) used r = 0.01 + softplus(raw),
which moves r at sigmoid(raw) times the reference's speed."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .base import PositionMethod

FLOOR = 1e-2  # smallest r1, r2 (the paper's code clamps both to min 0.01)


def inverse_softplus(y: torch.Tensor) -> torch.Tensor:
    """x with softplus(x) = y (y > 0): log(exp(y) - 1), written stably."""
    return y + torch.log(-torch.expm1(-y))


def floored(r: torch.Tensor) -> torch.Tensor:
    """max(r, 0.01) in value, with the gradient of r itself (the reference clamps .data in place,
    so its gradient always reaches the parameter, computed at the clamped value)."""
    return r + (r.clamp(min=FLOOR) - r).detach()


class KerplePosition(PositionMethod):
    name = "kerple"
    settings = ("softplus_params",)

    def __init__(self, config) -> None:
        super().__init__(config)
        H = config.n_head
        self.softplus = config.softplus_params
        r1, r2 = 2 * torch.rand(H), torch.rand(H)  # U(0, 2) and U(0, 1), as the paper's bias_p, bias_a
        if self.softplus:  # legacy: state dict keys r1_raw, r2_raw
            self.r1_raw = nn.Parameter(inverse_softplus(r1.clamp(min=2 * FLOOR) - FLOOR))  # (H,)
            self.r2_raw = nn.Parameter(inverse_softplus(r2.clamp(min=2 * FLOOR) - FLOOR))  # (H,)
        else:
            self.r1_param = nn.Parameter(r1.clamp(min=FLOOR))  # (H,)
            self.r2_param = nn.Parameter(r2.clamp(min=FLOOR))  # (H,)

    # Read through floored(), which changes nothing in training (after_step keeps the parameters >=
    # 0.01); for parameters set by hand it gives what the reference's in-place clamp before use gives.
    @property
    def r1(self) -> torch.Tensor:
        """(H,) the kernel's scale, >= 0.01."""
        return FLOOR + F.softplus(self.r1_raw) if self.softplus else floored(self.r1_param)

    @property
    def r2(self) -> torch.Tensor:
        """(H,) the kernel's distance scale, >= 0.01."""
        return FLOOR + F.softplus(self.r2_raw) if self.softplus else floored(self.r2_param)

    def after_step(self, step: int, progress: float) -> None:
        if not self.softplus:  # the reference's in-place clamp (ParallelKerpleLog.forward)
            with torch.no_grad():
                self.r1_param.clamp_(min=FLOOR)
                self.r2_param.clamp_(min=FLOOR)

    def distance_bias(self, distance: torch.Tensor) -> torch.Tensor:
        shape = (-1, *[1] * distance.dim())  # (H, 1, ...)
        d = distance.clamp(min=0).float()[None]  # future keys are masked anyway; 0 keeps log1p finite
        return -self.r1.view(shape) * torch.log1p(self.r2.view(shape) * d)  # (H, *distance.shape)

    def describe(self, length: int) -> dict:
        """Per head r1 (the bias's depth) and r2 (how soon it bends) of -r1 log(1 + r2 d)."""
        pairs = list(zip(self.r1.tolist(), self.r2.tolist(), strict=True))
        return {"kerple": [{"head": h, "r1": r1, "r2": r2} for h, (r1, r2) in enumerate(pairs)],
                "column": "r1 / r2", "head_labels": [f"{r1:.3g} / {r2:.3g}" for r1, r2 in pairs]}
