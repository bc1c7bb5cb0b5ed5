"""p-RoPE (Barbero et al. 2025, "Round and Round We Go! What makes Rotary Positional Encodings
useful?", Sec. 6): RoPE on the highest fraction p of the frequencies only; the lowest 1 - p are set
to zero, so their channels carry no position (a semantic channel that never rotates off its key).
The paper's convention: ModelConfig.rope_fraction = p is the fraction of frequencies *kept*, the
fastest ones. (GPT-NeoX's `rotary_pct` differs: it rotates a leading fraction of the channels with
frequencies spread over that fraction alone.)"""

from __future__ import annotations

import torch

from .rotary import RotaryPosition


class PartialRotaryPosition(RotaryPosition):
    name = "p-rope"
    settings = ("rope_fraction",)

    def __init__(self, config) -> None:
        super().__init__(config)
        # frequencies rotated, the fastest first: HF transformers modeling_rope_utils.py,
        # `_compute_proportional_rope_parameters`: rope_angles = int(partial_rotary_factor * head_dim // 2)
        self.kept = int(config.rope_fraction * self.head_dim // 2)

    def adjust_frequencies(self, inv_freq: torch.Tensor) -> torch.Tensor:
        """The fastest `kept` frequencies as they are, zero for the rest (trained or rescaled alike)."""
        return torch.where(torch.arange(inv_freq.numel(), device=inv_freq.device) < self.kept, inv_freq, 0.0)
