"""xPos (Sun et al. 2022, "A Length-Extrapolatable Transformer", Sec. 3.2): rotary plus an
exponential decay. Rotary pair i of the query at position n is also scaled by zeta_i^(n/gamma) and
that of the key by zeta_i^(-n/gamma), so q_m . k_n gains the factor zeta_i^((m-n)/gamma): still a
function of the offset alone, and < 1 for keys behind the query (zeta_i < 1), shrinking with distance.
zeta_i = (2i/d + 0.4) / 1.4 and gamma = 512 (the paper's scale base, torchscale's XPOS)."""

from __future__ import annotations

import math

import torch

from ..errors import LengthError
from .ids import Positions
from .rotary import RotaryPosition


class XposPosition(RotaryPosition):
    name = "xpos"
    scale_base = 512.0  # gamma

    def zeta(self, device=None) -> torch.Tensor:
        """(hd/2,) zeta_i = (2i/d + 0.4) / 1.4, in (0.29, 1): strongest decay on the fastest pairs."""
        i = torch.arange(0, self.head_dim // 2, dtype=torch.float32, device=device)
        return (2 * i / self.head_dim + 0.4) / 1.4

    def max_position(self, dtype: torch.dtype) -> int:
        """Positions are absolute (not re-centred per call as in torchscale, so cached keys keep their
        scale): the key scale zeta^(-n/gamma) overflows `dtype` (and the query's underflows) from
        about gamma * ln(max) / -ln(zeta_0): ~35k positions in float32/bfloat16, ~4k in float16."""
        finfo = torch.finfo(dtype)
        room = min(math.log(finfo.max), -math.log(finfo.tiny))
        return int(self.scale_base * room / -math.log(0.4 / 1.4))  # zeta_0 = 0.4 / 1.4

    def decay(self, positions: Positions, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """(T, hd) zeta^(n/gamma) and its inverse for the T positions n of `positions`."""

        def build():
            n = positions.tensor(device).float()
            log_scale = n[:, None] / self.scale_base * self.zeta(device).log()[None, :]  # (T, hd/2)
            log_scale = torch.cat((log_scale, log_scale), dim=-1)  # (T, hd): both halves of each pair
            return torch.stack((log_scale.exp(), (-log_scale).exp())).to(dtype)

        scale, inverse = self.cached(("xpos", device, dtype), build, positions)
        return scale, inverse

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        limit, end = self.max_position(q.dtype), positions.end()
        if end > limit:
            raise LengthError(f"'xpos' positions stop at {limit:,} in {str(q.dtype).removeprefix('torch.')} "
                              f"(its decay scale overflows); positions up to {end:,} were asked for")
        return super().rotate(q, k, positions)

    def rotation(self, positions: Positions, device, dtype) -> tuple[torch.Tensor, ...]:
        """Rotary's cos and signed sin times the decay for the queries, times its inverse for the keys
        (folded into the tables: no pass over q and k of its own)."""

        def build():
            cos, signed_sin, _, _ = super(XposPosition, self).rotation(positions, device, torch.float32)
            scale, inverse = self.decay(positions, device, torch.float32)  # (T, hd) each
            return torch.stack((cos * scale, signed_sin * scale, cos * inverse, signed_sin * inverse)).to(dtype)

        return tuple(self.cached(("xpos rotation", device, dtype), build, positions))
