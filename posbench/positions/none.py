"""NoPE: no position information at all; the causal mask alone lets the model infer order
(Haviv et al. 2022; Kazemnejad et al. 2023)."""

from .base import PositionMethod


class NoPosition(PositionMethod):
    name = "none"
    encodes_positions = False
