"""RoPE scaling at evaluation time: change a trained rotary (or xPos) model's rotary frequencies in
place so it reads longer inputs, without retraining. theta_i = base^(-2i/d) are the trained
frequencies (d = head dim, i = 0 .. d/2-1), s = factor, L = the training length.

linear  position interpolation (Chen et al. 2023, "Extending Context Window of Large Language Models
        via Positional Interpolation"): positions m -> m / s, i.e. theta_i -> theta_i / s.
ntk     NTK-aware scaling (bloc97 2023; YaRN paper Sec. 3.1): base -> base * s^(d / (d - 2)); the
        fastest pair (i = 0) keeps its frequency, the slowest is divided by exactly s.
yarn    YaRN (Peng et al. 2023, "YaRN: Efficient Context Window Extension of Large Language Models",
        Sec. 3.2 "NTK-by-parts" and 3.4), as the authors' code computes it (mirrored by HF transformers
        `_compute_yarn_parameters`, src/transformers/modeling_rope_utils.py): the pair index where
        pair i turns r times within L is c(r) = d ln(L / (2 pi r)) / (2 ln base); low = floor(c(32)),
        high = ceil(c(1)) (beta_fast = 32, beta_slow = 1), clamped to [0, d-1]; a linear ramp over
        the pair index, ramp_i = clamp((i - low) / (high - low), 0, 1), and
        theta_i -> theta_i / s * ramp_i + theta_i * (1 - ramp_i): pairs that turn many times within
        L are kept, pairs slower than L are interpolated. Plus the attention temperature
        sqrt(1/t) = 0.1 ln(s) + 1 multiplying cos and sin (hence q and k each, the logits by its
        square), as that code does. (The paper's prose ramps linearly in r = L / lambda instead;
        posbench's legacy runs followed that, which put pair 0 of the quick preset at 0.34x the
        reference's frequency.)
dynamic dynamic NTK (emozilla 2023; HF transformers `_compute_dynamic_ntk_parameters`): NTK's base
        change, recomputed for each forward pass from its length n (the largest position + 1):
        base -> base * (s n / L - (s - 1))^(d / (d - 2)) when n > L, the trained frequencies below.
        Decoding through a KV cache, a key keeps the rotation of the pass that cached it, as in HF.
Every kind starts from RoFormer's frequencies and ends with the method's own adjustment
(RotaryPosition.adjust_frequencies): a frequency p-RoPE leaves out stays zero, Resonance RoPE's
wavelengths are rounded after scaling (the reference's Resonance YaRN).
"""

from __future__ import annotations

import math

import torch

from ..errors import PosbenchError
from .rotary import RotaryPosition

KINDS = ("linear", "ntk", "yarn", "dynamic")
YARN_BETA_FAST, YARN_BETA_SLOW = 32.0, 1.0  # turns within L: kept above beta_fast, interpolated below beta_slow


def ntk_inv_freq(inv_freq: torch.Tensor, base: float, factor: float) -> torch.Tensor:
    """(d/2,) the frequencies of base * s^(d/(d-2)), d = 2 * len(inv_freq)."""
    d = 2 * inv_freq.numel()
    if d <= 2:
        raise PosbenchError("NTK-aware RoPE scaling needs a head dimension above 2")
    new_base = base * factor ** (d / (d - 2))
    i = torch.arange(d // 2, dtype=torch.float32, device=inv_freq.device)
    return new_base ** (-2 * i / d)


def yarn_correction_dim(turns: float, dim: int, base: float, train_len: int) -> float:
    """The (fractional) pair index whose frequency turns `turns` times within train_len positions:
    base^(-2i/dim) * L / (2 pi) = turns, solved for i."""
    return dim * math.log(train_len / (turns * 2 * math.pi)) / (2 * math.log(base))


def yarn_ramp(dim: int, base: float, train_len: int) -> torch.Tensor:
    """(dim/2,) in [0, 1] over the pair index: 0 keeps pair i (extrapolation), 1 interpolates it.
    low/high are floored/ceiled and clamped to [0, dim-1] as in the reference code."""
    low = max(math.floor(yarn_correction_dim(YARN_BETA_FAST, dim, base, train_len)), 0)
    high = min(math.ceil(yarn_correction_dim(YARN_BETA_SLOW, dim, base, train_len)), dim - 1)
    if high == low:  # the reference's guard against a zero-width ramp
        high += 0.001
    pair = torch.arange(dim // 2, dtype=torch.float32)
    return ((pair - low) / (high - low)).clamp(0, 1)


def yarn_inv_freq(inv_freq: torch.Tensor, factor: float, train_len: int, base: float) -> torch.Tensor:
    """(d/2,) YaRN's NTK-by-parts frequencies: per pair, theta / s where the ramp is 1, theta where
    it is 0, a linear blend in between (d = 2 * len(inv_freq), the rotary base `base`)."""
    ramp = yarn_ramp(2 * inv_freq.numel(), base, train_len).to(inv_freq.device)
    return inv_freq / factor * ramp + inv_freq * (1 - ramp)


def yarn_attention_scale(factor: float) -> float:
    """sqrt(1/t) = 0.1 ln(s) + 1, applied to q and k each (1 for s <= 1, as the reference code)."""
    return 0.1 * math.log(factor) + 1.0 if factor > 1 else 1.0


def apply_rope_scaling(model, kind: str | None, factor: float, train_len: int) -> None:
    """Rescale the rotary frequencies of `model` (a posbench GPT whose method is rotary or xpos) in
    place: kind linear | ntk | yarn (None or "none": back to the trained frequencies), factor s > 0,
    train_len L = the run's training length (config["train"]["train_len"]; only yarn uses it).
    Always computed from the trained frequencies, so applying twice does not compound. The weights
    and state_dict are untouched; the change lives until the model is reloaded."""
    rotary = [m for m in model.position_methods() if isinstance(m, RotaryPosition)]
    if not rotary:
        raise PosbenchError(f"RoPE scaling needs a rotary model (one with rotary layers); this run uses "
                            f"'{model.config.pos}'")
    if kind is None or kind == "none":
        for pos in rotary:
            pos.set_frequencies(None)
        return
    if kind not in KINDS:
        raise PosbenchError(f"unknown RoPE scaling '{kind}'; choose from {', '.join(KINDS)}")
    if not factor > 0 or not math.isfinite(factor):
        raise PosbenchError(f"the RoPE scaling factor must be a positive number, got {factor}")
    if train_len <= 0:
        raise PosbenchError(f"the training length must be positive, got {train_len}")
    for pos in rotary:
        if kind == "dynamic":
            pos.set_dynamic(factor, train_len)
            continue
        unadjusted = pos.base_inv_freq(next(model.parameters()).device)  # (hd/2,)
        inv_freq, attn_scale = scaled_frequencies(kind, unadjusted, pos.base, factor, train_len)
        inv_freq = pos.adjust_frequencies(inv_freq)
        pos.set_frequencies(inv_freq, attn_scale, {"kind": kind, "factor": factor, "train_len": train_len})


def scaled_frequencies(kind: str, trained: torch.Tensor, base: float, factor: float, train_len: int,
                       ) -> tuple[torch.Tensor, float]:
    """(hd/2,) frequencies and the q/k scale of a static kind (linear, ntk, yarn)."""
    if kind == "linear":
        return trained / factor, 1.0
    if kind == "ntk":
        return ntk_inv_freq(trained, base, factor), 1.0
    return yarn_inv_freq(trained, factor, train_len, base), yarn_attention_scale(factor)
