"""Resonance RoPE (Wang et al. 2024, "Resonance RoPE: Improving Context Length Generalization of
Large Language Models", Sec. 4): RoPE with every wavelength 2 pi / theta_i rounded to the nearest
integer, theta_i -> 2 pi / round(2 pi / theta_i). A pair whose wavelength fits in the training length
then repeats exactly the angles it was trained on at every later position, so only pairs slower than
L meet an angle they never saw. Reference: sheryc/resonance_rope,
`src/models/components/positional_embedding/rotary_resonance.py` (ResonanceRotaryEmbedding). With
YaRN, the reference's ResonanceYaRNScaledRotaryEmbedding rounds the scaled wavelengths; posbench's RoPE
scaling does so for every kind (adjust_frequencies), with its own YaRN's ramp (HF's beta_fast 32, where
that class defaults to 2)."""

from __future__ import annotations

import math

import torch

from .rotary import RotaryPosition


class ResonanceRotaryPosition(RotaryPosition):
    name = "resonance"

    def adjust_frequencies(self, inv_freq: torch.Tensor) -> torch.Tensor:
        return 2 * math.pi / torch.round(2 * math.pi / inv_freq)

    def angles(self, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        """(p mod wavelength) * theta, as the reference builds its table (one wavelength's angles,
        repeated): exactly periodic, where p * theta in float32 drifts by ~1e-3 rad at 16k positions."""
        wavelength = torch.round(2 * math.pi / inv_freq)  # (hd/2,), integers (from adjust_frequencies)
        return torch.remainder(positions[:, None].double(), wavelength[None, :].double()).float() * inv_freq[None, :]
