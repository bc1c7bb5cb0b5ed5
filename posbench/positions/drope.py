"""DroPE (Gelberg et al. 2025, "Extending the Context of Pretrained LLMs by Dropping Their Positional
Embeddings", arXiv 2512.12167; SakanaAI/DroPE `custom_models/attention.py`): train with RoPE, then
drop it in every layer and recalibrate the now position-free (NoPE) model by training on at the same
length. The reference drops RoPE by passing cos = 1, sin = 0 (an identity rotation) to an unchanged
attention, and keeps the logit scale 1/sqrt(hd).

In posbench the drop happens inside one training run, after ModelConfig.drop_at of it (the last
1 - drop_at recalibrate); the reference recalibrates a finished checkpoint as a new run with its
own optimizer and schedule, so here the learning-rate schedule simply goes on (docs/methods.md).
Whether and at which step the drop happened are buffers of the model, so a checkpoint taken on
either side of it resumes exactly and evaluation sees the model as trained."""

from __future__ import annotations

import torch

from .ids import Positions
from .rotary import RotaryPosition


class DropePosition(RotaryPosition):
    name = "drope"
    rope_scalable = False  # evaluated as NoPE: there is no rotation left to rescale
    settings = ("drop_at",)

    def __init__(self, config) -> None:
        super().__init__(config)
        self.drop_at = config.drop_at
        self.register_buffer("dropped_at_step", torch.tensor(-1))  # the step after which RoPE is gone; -1: not yet
        self.dropped = False  # the buffer as a Python bool: read every pass, and by torch.compile without a break

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.dropped = int(self.dropped_at_step) >= 0

    @property
    def encodes_positions(self) -> bool:
        return not self.dropped

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        return (q, k) if self.dropped else super().rotate(q, k, positions)

    def after_step(self, step: int, progress: float) -> None:
        if not self.dropped and progress >= self.drop_at:
            self.dropped_at_step.fill_(step)
            self.dropped = True

    def describe(self, length: int) -> dict:
        return {"dropped_at_step": int(self.dropped_at_step) if self.dropped else None}
