"""ALiBi (Press et al. 2022, "Train Short, Test Long"): no position embedding; each head adds
-m * (i - j) to the score of key j for query i, with a fixed head-specific slope m."""

import math

import torch

from .base import PositionMethod


def alibi_slopes(n_heads: int) -> torch.Tensor:
    """Slopes of Press et al. 2022, Sec. 3: for n a power of two, the geometric sequence starting
    at and with ratio 2^(-8/n). Otherwise: the n' = 2^floor(log2 n) slopes, then every other slope
    of the 2n' set, until n heads are covered (the paper's reference code)."""
    assert n_heads >= 1, "need at least one head"

    def power_of_two(n: int) -> list[float]:
        ratio = 2.0 ** (-8.0 / n)
        return [ratio ** (k + 1) for k in range(n)]

    lower = 2 ** math.floor(math.log2(n_heads))
    slopes = power_of_two(lower)
    if lower < n_heads:
        slopes += power_of_two(2 * lower)[0::2][: n_heads - lower]
    return torch.tensor(slopes, dtype=torch.float32)


class AlibiPosition(PositionMethod):
    name = "alibi"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.register_buffer("slopes", alibi_slopes(config.n_head), persistent=False)  # (H,)

    def distance_bias(self, distance: torch.Tensor) -> torch.Tensor:
        slopes = self.slopes.view(-1, *[1] * distance.dim())  # (H, 1, ...)
        return -slopes * distance[None].float()  # (H, *distance.shape)

    def describe(self, length: int) -> dict:
        slopes = self.slopes.tolist()
        return {"slope": slopes, "column": "slope", "head_labels": [f"{m:.4g}" for m in slopes]}
