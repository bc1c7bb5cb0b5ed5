"""The fused-kernel path for score-bias methods on CUDA: FlexAttention (torch >= 2.5) adds the method's
bias inside the kernel and skips future blocks, so no (B, H, Tq, Tk) mask is materialised."""

from __future__ import annotations

import functools

import torch

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch: SDPA with a float mask everywhere
    flex_attention = create_block_mask = None


@functools.lru_cache(maxsize=32)
def _causal_block_mask(q_len: int, k_len: int, offset: int, device: str):
    """FlexAttention's block-sparse causal mask: key j is visible to query i when j <= offset + i
    (offset: the index of the first query among the keys; causality is by order, not position id)."""
    return create_block_mask(lambda b, h, i, j: i + offset >= j, None, None, q_len, k_len, device=device)


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def flex_biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, offset: int
) -> torch.Tensor:
    """The fused-kernel path for score-bias methods (used on CUDA): FlexAttention adds the (H, Tq, Tk)
    bias inside the kernel via score_mod and skips future blocks (query i sees keys 0..offset+i), so no
    (B, H, Tq, Tk) mask or score tensor is ever materialised. Equal to the SDPA path to the precision of q's dtype."""
    bias = bias.to(q.dtype)

    def add_bias(score, b, h, i, j):
        return score + bias[h, i, j]

    block_mask = _causal_block_mask(q.size(2), k.size(2), offset, str(q.device))
    return _compiled_flex()(q, k, v, score_mod=add_bias, block_mask=block_mask)
