"""FIRE (Li et al. 2023, "Functional Interpolation for Relative Positions Improves Long Context
Transformers", Sec. 3): the score of key j for query i gets, per head,

    b(i, j) = f_theta( psi(i - j) / psi(max(i, L)) ),   psi(x) = log(c * x + 1)

f_theta a small MLP (1 -> 32 -> ReLU -> H, one value per head), c > 0 learned (the log transform
that sharpens short distances), L a learned threshold (progressive interpolation: queries past L see
distances normalised into [0, 1], shorter ones a fixed scale). As the paper's appendix code (class
FIRE): c is a raw parameter from 0.1 used as |c|; L = |L_multiplier| * init_L with the multiplier
learned from 1 and init_L a fixed constant (512 there; ModelConfig.fire_init_L); eps = 1e-6 added to
the normaliser's log. Runs before issue 13 (ModelConfig.softplus_params, fire_init_L None) used
c = softplus(raw) and init_L = the training length."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import PositionMethod, position_distance
from .ids import Positions


def relu_pieces(first: nn.Linear, second: nn.Linear) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The MLP u -> second(relu(first(u))) of a scalar u, written as the piecewise-linear function it
    is: (W,) sorted kinks (where a hidden unit switches; +inf for a unit whose input weight is 0) and
    per piece (W + 1, H) slope and intercept, piece i spanning (kinks[i-1], kinks[i]] as
    torch.bucketize numbers them. Evaluating slope * u + intercept costs a few operations per (query,
    key) instead of the width-32 hidden layer; equal to the MLP to float rounding, gradients too."""
    w1, b1 = first.weight[:, 0], first.bias  # (W,)
    with torch.no_grad():  # which units are on in each piece: fixed by the current parameters
        kinks = torch.where(w1 != 0, -b1 / w1, torch.inf).sort().values  # (W,)
        # a point inside each piece: left of the first kink, between neighbours, right of the last
        # (inf stands for "u -> +inf", the pieces past a unit with weight 0 that bucketize never picks)
        inside = torch.cat((kinks[:1] - 1, (kinks[:-1] + kinks[1:]) / 2, kinks[-1:] + 1))  # (W + 1,)
        on = torch.where(w1 != 0, inside[:, None] * w1, 0.0) + b1 > 0  # (W + 1, W)
    slope = (on * w1) @ second.weight.T  # (W + 1, H)
    intercept = (on * b1) @ second.weight.T + second.bias  # (W + 1, H)
    return kinks, slope, intercept


class FirePosition(PositionMethod):
    name = "fire"
    settings = ("fire_init_L", "softplus_params")
    width = 32  # the MLP's hidden width
    init_c = 0.1
    eps = 1e-6  # keeps psi(max(i, L)) away from 0 in the division

    def __init__(self, config) -> None:
        super().__init__(config)
        # a plain float, not a buffer: the state dict stays as it was before init_L became a setting
        self.init_L = float(config.train_len if config.fire_init_L is None else config.fire_init_L)
        self.softplus = config.softplus_params
        self.mlp = nn.Sequential(nn.Linear(1, self.width), nn.ReLU(), nn.Linear(self.width, config.n_head))
        if self.softplus:  # legacy: state dict key c_raw, softplus^-1(0.1)
            self.c_raw = nn.Parameter(torch.tensor(math.log(math.expm1(self.init_c))))
        else:
            self.c_param = nn.Parameter(torch.tensor(self.init_c))
        self.L_multiplier = nn.Parameter(torch.tensor(1.0))  # L = |multiplier| * init_L

    @property
    def c(self) -> torch.Tensor:
        """c > 0: |c_param| as the reference (log(|c x| + 1) with x >= 0), or softplus(c_raw)."""
        return F.softplus(self.c_raw) if self.softplus else self.c_param.abs()

    @property
    def threshold(self) -> torch.Tensor:
        """L, the learned threshold (starts at init_L)."""
        return self.L_multiplier.abs() * self.init_L

    def psi(self, x: torch.Tensor) -> torch.Tensor:
        """psi(x) = log(c x + 1), the paper's log transform."""
        return torch.log1p(self.c * x)

    def normalized_distance(self, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
        """(q, k) psi(i - j) / psi(max(i, L)), the MLP's input; 0 on future keys (masked anyway)."""
        device = self.L_multiplier.device

        def build():
            return position_distance(q_pos, k_pos, device).clamp(min=0).float()  # (q, k)

        distance = self.cached(("fire", device), build, q_pos, k_pos)  # (q, k)
        query = q_pos.tensor(device).float()[:, None]  # (q, 1) = i
        normalizer = self.psi(torch.maximum(query, self.threshold))  # (q, 1)
        return self.psi(distance) / (normalizer + self.eps)

    def score_bias(self, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
        u = self.normalized_distance(q_pos, k_pos)  # (q, k)
        kinks, slope, intercept = relu_pieces(self.mlp[0], self.mlp[2])
        piece = torch.bucketize(u, kinks)  # (q, k): which linear piece of the MLP each input falls on
        line = F.embedding(piece, torch.cat((slope, intercept), dim=1))  # (q, k, 2H): one gather for both
        bias = torch.addcmul(line[..., self.n_head :], line[..., : self.n_head], u[..., None])  # (q, k, H)
        return bias.permute(2, 0, 1).contiguous()  # (H, q, k): SDPA reads a mask fastest key-contiguous

    def describe(self, length: int) -> dict:
        c, threshold = self.c.item(), self.threshold.item()
        return {"fire": {"c": c, "L": threshold}, "column": "c / L",
                "head_labels": [f"{c:.3g} / {threshold:.4g}"] * self.n_head}
