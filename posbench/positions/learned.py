"""Learned absolute positions (GPT-2): one trainable vector per position, a table of max_len rows."""

import torch
from torch import nn

from ..errors import LengthError
from .base import EMBED_INIT_STD, PositionMethod
from .ids import Positions


class LearnedPosition(PositionMethod):
    name = "learned"

    def __init__(self, config) -> None:
        super().__init__(config)
        self.max_len = self.max_positions = config.train_len
        self.table = nn.Embedding(config.train_len, config.d_model)
        nn.init.normal_(self.table.weight, std=EMBED_INIT_STD)

    def embed(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        end = positions.end()
        if end > self.max_len:
            raise LengthError(
                f"'learned' positions stop at its table of {self.max_len} rows; "
                f"positions up to {end} were asked for"
            )
        if positions.is_range:  # a slice of the table, as before explicit ids
            return x + self.table.weight[positions.start : end]  # (B, T, D) + (T, D)
        return x + self.table(positions.tensor(x.device))  # (B, T, D) + (T, D)
