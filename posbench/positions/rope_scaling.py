"""RoPE scaling at evaluation time: change a trained rotary (or xPos) model's rotary frequencies in
place so it reads longer inputs, without retraining. theta_i = base^(-2i/d) are the trained
frequencies (d = head dim, i = 0 .. d/2-1), s = factor, L = the training length.

linear  position interpolation (Chen et al. 2023, "Extending Context Window of Large Language Models
        via Positional Interpolation"): positions m -> m / s, i.e. theta_i -> theta_i / s.
ntk     NTK-aware scaling (bloc97 2023; YaRN paper Sec. 3.1): base -> base * s^(d / (d - 2)); the
        fastest pair (i = 0) keeps its frequency, the slowest is divided by exactly s.
yarn    YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models",
        Sec. 3.2 "NTK-by-parts" and 3.4): per pair, r_i = L / lambda_i with wavelength
        lambda_i = 2 pi / theta_i; ramp gamma(r) = 0 if r < alpha, 1 if r > beta, else
        (r - alpha) / (beta - alpha), alpha = 1, beta = 32;
        theta_i -> (1 - gamma(r_i)) theta_i / s + gamma(r_i) theta_i (pairs that turn many times
        within L are kept, pairs slower than L are interpolated), plus the attention temperature
        sqrt(1/t) = 0.1 ln(s) + 1 multiplying q and k each (the logits by its square), as the
        reference code does by scaling cos and sin. (The reference code ramps linearly over the
        pair index between the floor/ceil of the pairs where r = beta and r = alpha; this is the
        paper's ramp in r.)
"""

from __future__ import annotations

import math

import torch

from ..errors import PosbenchError
from .rotary import RotaryPosition

KINDS = ("linear", "ntk", "yarn")
YARN_ALPHA, YARN_BETA = 1.0, 32.0


def ntk_inv_freq(inv_freq: torch.Tensor, base: float, factor: float) -> torch.Tensor:
    """(d/2,) the frequencies of base * s^(d/(d-2)), d = 2 * len(inv_freq)."""
    d = 2 * inv_freq.numel()
    if d <= 2:
        raise PosbenchError("NTK-aware RoPE scaling needs a head dimension above 2")
    new_base = base * factor ** (d / (d - 2))
    i = torch.arange(d // 2, dtype=torch.float32, device=inv_freq.device)
    return new_base ** (-2 * i / d)


def yarn_ramp(inv_freq: torch.Tensor, train_len: int, alpha: float = YARN_ALPHA, beta: float = YARN_BETA
              ) -> torch.Tensor:
    """(d/2,) gamma(r_i) in [0, 1]: 1 keeps pair i (extrapolation), 0 interpolates it."""
    r = train_len * inv_freq / (2 * math.pi)  # L / wavelength: turns of pair i within L
    return ((r - alpha) / (beta - alpha)).clamp(0, 1)


def yarn_inv_freq(inv_freq: torch.Tensor, factor: float, train_len: int) -> torch.Tensor:
    """(d/2,) YaRN's NTK-by-parts frequencies: a per-pair blend of theta / s and theta."""
    gamma = yarn_ramp(inv_freq, train_len)
    return (1 - gamma) * inv_freq / factor + gamma * inv_freq


def yarn_attention_scale(factor: float) -> float:
    """sqrt(1/t) = 0.1 ln(s) + 1, applied to q and k each (1 for s <= 1, as the reference code)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def apply_rope_scaling(model, kind: str | None, factor: float, train_len: int) -> None:
    """Rescale the rotary frequencies of `model` (a posbench GPT whose method is rotary or xpos) in
    place: kind linear | ntk | yarn (None or "none": back to the trained frequencies), factor s > 0,
    train_len L = the run's training length (config["train"]["train_len"]; only yarn uses it).
    Always computed from the trained frequencies, so applying twice does not compound. The weights
    and state_dict are untouched; the change lives until the model is reloaded."""
    pos = model.pos
    if not isinstance(pos, RotaryPosition):
        raise PosbenchError(f"RoPE scaling needs a rotary model (rotary or xpos); this run uses "
                            f"'{model.config.pos}'")
    if kind is None or kind == "none":
        pos.set_frequencies(None)
        return
    if kind not in KINDS:
        raise PosbenchError(f"unknown RoPE scaling '{kind}'; choose from {', '.join(KINDS)}")
    if not factor > 0 or not math.isfinite(factor):
        raise PosbenchError(f"the RoPE scaling factor must be a positive number, got {factor}")
    if train_len <= 0:
        raise PosbenchError(f"the training length must be positive, got {train_len}")
    device = next(model.parameters()).device
    trained = pos.default_inv_freq(device)  # (hd/2,)
    attn_scale = 1.0
    if kind == "linear":
        inv_freq = trained / factor
    elif kind == "ntk":
        inv_freq = ntk_inv_freq(trained, pos.base, factor)
    else:
        inv_freq = yarn_inv_freq(trained, factor, train_len)
        attn_scale = yarn_attention_scale(factor)
    pos.set_frequencies(inv_freq, attn_scale, {"kind": kind, "factor": factor, "train_len": train_len})
