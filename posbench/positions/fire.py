"""FIRE (Li et al. 2023, "Functional Interpolation for Relative Positions Improves Long Context
Transformers", Sec. 3): the score of key j for query i gets, per head,

    b(i, j) = f_theta( psi(i - j) / psi(max(i, L)) ),   psi(x) = log(c * x + 1)

f_theta a small MLP (1 -> 32 -> ReLU -> H, one value per head), c > 0 learned (the log transform
that sharpens short distances), L a learned threshold (progressive interpolation: queries past L see
distances normalised into [0, 1], shorter ones a fixed scale). As the paper's appendix code (class
FIRE): c is a raw parameter from 0.1 used as |c|; L = |L_multiplier| * init_L with the multiplier
learned from 1 and init_L a fixed constant (512 there; ModelConfig.fire_init_L); eps = 1e-6 added to
the normaliser's log. Legacy runs (ModelConfig.softplus_params, fire_init_L None) used
c = softplus(raw) and init_L = the training length."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .base import PositionMethod
from .ids import Positions

# Without a gradient, the bias is built in tiles of (query, key) pairs: a tile's inputs span a short
# range of u (narrow far from the diagonal, as psi is a log), where few of the MLP's units switch,
# and its temporaries stay in cache. 128 x 1024 was fastest at 16k tokens on 2 CPU threads.
TILE = (128, 1024)


def fold_steady_units(first: nn.Linear, second: nn.Linear, low: torch.Tensor, high: torch.Tensor):
    """The MLP u -> second(relu(first(u))) of a scalar u in [low, high], as a line plus the hidden
    units that switch inside: a unit whose input w u + b keeps its sign over the interval is linear
    there (itself when on, 0 when off), so it joins the line. Returns (H, 1 + M) weights on the
    rows [u, relu(w_s u + b_s) for the M switching units], whose inputs are (1 + M, 1) w and b (row
    0: w = 1, b = 0, u itself, not put through the ReLU), and (H, 1) intercepts. Equal to the MLP on
    the interval up to float rounding (the sum is regrouped), gradients too."""
    w, b = first.weight[:, 0], first.bias  # (W,)
    with torch.no_grad():  # which units switch: fixed by the parameters and the interval
        ends = torch.stack((w * low + b, w * high + b))  # (2, W) each unit's input at both ends
        on = (ends >= 0).all(0)
        switching = ~on & (ends > 0).any(0)  # positive at one end, negative at the other
    out = second.weight  # (H, W)
    slope = out[:, on] @ w[on]  # (H,) the units on throughout, summed into one line
    intercept = second.bias + out[:, on] @ b[on]  # (H,)
    weights = torch.cat((slope[:, None], out[:, switching]), dim=1)  # (H, 1 + M)
    w, b = torch.cat((w.new_ones(1), w[switching])), torch.cat((b.new_zeros(1), b[switching]))  # (1 + M,)
    return weights, w[:, None], b[:, None], intercept[:, None]


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

        def build():  # in float32 at once (exact for ids below 2**24): a third of the memory traffic
            ids = q_pos.tensor(device).float()[:, None], k_pos.tensor(device).float()[None, :]
            return torch.sub(*ids).clamp_(min=0)  # (q, k)

        distance = self.cached(("fire", device), build, q_pos, k_pos)  # (q, k)
        query = q_pos.tensor(device).float()[:, None]  # (q, 1) = i
        normalizer = self.psi(torch.maximum(query, self.threshold))  # (q, 1)
        return self.psi(distance) / (normalizer + self.eps)

    def score_bias(self, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
        u = self.normalized_distance(q_pos, k_pos)  # (q, k)
        # one tile: autograd would clone the whole bias gradient per tile written; a compiled graph
        # takes the whole bias at once too
        if torch.is_grad_enabled() or torch.compiler.is_compiling():
            return self.mlp_on(u)  # (H, q, k)
        (q_len, k_len), (rows, keys) = u.shape, TILE
        bias = u.new_empty(self.n_head, q_len, k_len)  # (H, q, k): SDPA reads a mask fastest key-contiguous
        for a in range(0, q_len, rows):
            for s in range(0, k_len, keys):
                bias[:, a : a + rows, s : s + keys] = self.mlp_on(u[a : a + rows, s : s + keys])
        return bias

    def mlp_on(self, u: torch.Tensor) -> torch.Tensor:
        """f_theta on a (r, k) tile -> (H, r, k): folded on the CPU; plain on CUDA, where picking the
        switching units (boolean indexing) would make the host wait for the GPU at every tile, and in
        a compiled graph, which fuses the plain MLP (a varying unit count would break it)."""
        if u.is_cuda or torch.compiler.is_compiling():
            return self.mlp(u[..., None]).permute(2, 0, 1).contiguous()  # every unit over every input
        return self.mlp_over(u)

    def mlp_over(self, u: torch.Tensor) -> torch.Tensor:
        """f_theta on a (r, k) tile of inputs -> (H, r, k), through only the units that switch within it."""
        weights, w, b, intercept = fold_steady_units(self.mlp[0], self.mlp[2], *torch.aminmax(u.detach()))
        hidden = torch.addcmul(b, w, u.reshape(1, -1))  # (1 + M, r * k): u, then each switching unit's input
        hidden[1:].relu_()
        return torch.addmm(intercept, weights, hidden).view(-1, *u.shape)  # (H, r, k)

    def describe(self, length: int) -> dict:
        c, threshold = self.c.item(), self.threshold.item()
        return {"fire": {"c": c, "L": threshold}, "column": "c / L",
                "head_labels": [f"{c:.3g} / {threshold:.4g}"] * self.n_head}
