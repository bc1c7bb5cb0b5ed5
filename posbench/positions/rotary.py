"""Rotary position embedding (Su et al. 2021, RoFormer, Eq. 34): rotate each pair of q/k channels
by an angle proportional to the position, so q_m . k_n depends only on m - n."""

from __future__ import annotations

import torch

from .base import PositionMethod
from .ids import Positions


def rotate_pairs(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """x * cos + rotate_half(x) * sin (HF's form; rotate_half: (x1, x2) -> (-x2, x1) on the two halves
    of the last dimension, the GPT-NeoX pairing), as x * cos + (x2, x1) * signed_sin, signed_sin
    being sin with its first half negated. x: (..., T, hd), the tables (T, hd), the same angle in
    both halves (a scale too, as xPos's, as long as both halves share it)."""
    if torch.compiler.is_compiling():  # Dynamo cannot trace writes into strided halves; its kernels fuse this
        x1, x2 = x.chunk(2, dim=-1)
        return torch.addcmul(x * cos, torch.cat((x2, x1), dim=-1), signed_sin)
    return _PairRotation.apply(x, cos, signed_sin)


def _rotate_halves(x: torch.Tensor, cos: torch.Tensor, signed_sin: torch.Tensor) -> torch.Tensor:
    """rotate_pairs without autograd: each half of the output written in place from x's two halves,
    no swapped copy of x (x may be a strided view of the qkv projection)."""
    h = x.size(-1) // 2
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)  # (..., T, hd)
    for o, a, b in ((slice(None, h), x[..., :h], x[..., h:]), (slice(h, None), x[..., h:], x[..., :h])):
        torch.mul(a, cos[:, o], out=out[..., o]).addcmul_(b, signed_sin[:, o])
    return out


class _PairRotation(torch.autograd.Function):
    """rotate_pairs with its own backward: a rotation's gradient is the rotation back, the same
    tables with the sine negated (R^T = R(-angle); a scale shared by both halves carries over), one
    pass instead of autograd's walk back through the multiplies: the rotation of q and k, forward and
    backward, cost 28-41 ms over none per layer under autograd, 14-18 ms like this (B 16, T 512, d 256,
    2 CPU threads)."""

    @staticmethod
    def forward(ctx, x, cos, signed_sin):
        assert not (cos.requires_grad or signed_sin.requires_grad), "rotation tables are constants"
        ctx.save_for_backward(cos, signed_sin)
        return _rotate_halves(x, cos, signed_sin)

    @staticmethod
    def backward(ctx, grad):
        cos, signed_sin = ctx.saved_tensors
        return _rotate_halves(grad, cos, -signed_sin), None, None


def dynamic_ntk_base(base: float, factor: float, train_len: int, length: int, dim: int) -> float:
    """Dynamic NTK's base for a pass over `length` positions (HF transformers modeling_rope_utils.py,
    `_compute_dynamic_ntk_parameters`, with seq_len = the largest position + 1):
    base * (s * length / L - (s - 1)) ^ (d / (d - 2)); applied only past L."""
    return base * (factor * length / train_len - (factor - 1)) ** (dim / (dim - 2))


class RotaryPosition(PositionMethod):
    name = "rotary"
    rope_scalable = True
    base = 10000.0

    def __init__(self, config) -> None:
        super().__init__(config)
        assert self.head_dim % 2 == 0, "rotary needs an even head dimension"
        # evaluation-time RoPE scaling (positions/rope_scaling.py) replaces the frequencies and may
        # scale q and k; not persistent: a run's weights never depend on it
        self.register_buffer("scaled_inv_freq", None, persistent=False)  # (hd/2,) or None
        self.attn_scale = 1.0  # multiplies cos and sin, hence q and k each (YaRN's sqrt(1/t))
        self.scaling: dict | None = None  # {"kind", "factor", "train_len"} once scaled
        # dynamic NTK (rope_scaling.py): the base grows with the length of each forward pass
        self.dynamic: tuple[float, int] | None = None  # (factor, train_len)

    def base_inv_freq(self, device, base: float | None = None) -> torch.Tensor:
        """(hd/2,) RoFormer's theta_i = base^(-2i/hd), before adjust_frequencies."""
        base = self.base if base is None else base
        return base ** (-torch.arange(0, self.head_dim, 2, dtype=torch.float32, device=device) / self.head_dim)

    def adjust_frequencies(self, inv_freq: torch.Tensor) -> torch.Tensor:
        """What a member of the rotary family does to any set of frequencies, the trained ones and
        those RoPE scaling computes alike: nothing here; p-RoPE zeroes its slowest, Resonance RoPE
        rounds each wavelength to an integer."""
        return inv_freq

    def default_inv_freq(self, device) -> torch.Tensor:
        """(hd/2,) the frequencies the model was trained with."""
        return self.adjust_frequencies(self.base_inv_freq(device))

    def angles(self, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
        """(T,) positions, (hd/2,) frequencies -> (T, hd/2) rotation angles."""
        return positions.float()[:, None] * inv_freq[None, :]

    def inv_freq(self, device, length: int = 0) -> torch.Tensor:
        """(hd/2,) the frequencies in use for a forward pass over positions < length: the trained
        ones, those set by set_frequencies, or dynamic NTK's for that length."""
        if self.scaled_inv_freq is not None:
            return self.scaled_inv_freq.to(device)
        if self.dynamic is None or length <= self.dynamic[1]:
            return self.default_inv_freq(device)
        base = dynamic_ntk_base(self.base, *self.dynamic, length, self.head_dim)
        return self.adjust_frequencies(self.base_inv_freq(device, base))

    def set_dynamic(self, factor: float, train_len: int) -> None:
        """Dynamic NTK from now on (set_frequencies(None) turns it off)."""
        self.set_frequencies(None)
        self.dynamic = (float(factor), int(train_len))
        self.scaling = {"kind": "dynamic", "factor": factor, "train_len": train_len}

    def set_frequencies(self, inv_freq: torch.Tensor | None, attn_scale: float = 1.0,
                        scaling: dict | None = None) -> None:
        """Replace the rotary frequencies (hd/2,) and the q/k scale, or restore the trained ones
        with None; the memoised cos/sin tables are dropped."""
        if inv_freq is not None:
            assert inv_freq.shape == (self.head_dim // 2,), inv_freq.shape
            inv_freq = inv_freq.detach().float()
        self.scaled_inv_freq = inv_freq
        self.dynamic = None
        self.attn_scale = float(attn_scale)
        self.scaling = scaling if inv_freq is not None else None
        self._static.clear()

    def cos_sin(self, positions: Positions, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, hd) cos and sin for `positions`, computed for any position (times attn_scale, 1 unless
        YaRN set it)."""
        cos, signed_sin = self._rope_tables(positions, device, dtype)
        first, second = signed_sin.chunk(2, dim=-1)
        return cos, torch.cat((-first, second), dim=-1)

    def _rope_tables(self, positions: Positions, device, dtype) -> torch.Tensor:
        """(2, T, hd): cos, and sin with its first half negated (rotate_pairs' signed_sin)."""

        def build():
            inv_freq = self.inv_freq(device, positions.end())
            angles = self.angles(positions.tensor(device), inv_freq)  # (T, hd/2)
            cos, sin = angles.cos(), angles.sin()
            # (T, hd) each: the same angle for both halves of the channels
            tables = torch.stack((torch.cat((cos, cos), -1), torch.cat((-sin, sin), -1)))
            return (tables * self.attn_scale).to(dtype)

        return self.cached(("rope", device, dtype), build, positions)

    def rotation(self, positions: Positions, device, dtype) -> tuple[torch.Tensor, ...]:
        """(T, hd) cos and signed sin for the queries, then for the keys (rotate_pairs): the same
        for rotary; xPos scales them apart."""
        cos, signed_sin = self._rope_tables(positions, device, dtype)
        return cos, signed_sin, cos, signed_sin

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        q_cos, q_sin, k_cos, k_sin = self.rotation(positions, q.device, q.dtype)  # (T, hd) each
        return rotate_pairs(q, q_cos, q_sin), rotate_pairs(k, k_cos, k_sin)
