"""The fused-kernel path for score-bias methods on CUDA: FlexAttention (torch >= 2.5) adds the method's
bias inside the kernel and skips future blocks, so no (B, H, Tq, Tk) mask is materialised.

Two forms: a bias of i - j alone (ALiBi, T5, KERPLE at consecutive positions) is read from its
(H, Tq + Tk - 1) vector of per-distance values, so nothing quadratic exists at all; any other bias
(FIRE, explicit ids) from an (H, Tq, Tk) tensor built once per pass. The bias stays float32: the
kernel adds it to float32 scores, and a bf16 ALiBi bias at slope 1/256 would move in steps of 0.125
beyond distance 4,096."""

from __future__ import annotations

import functools

import torch

try:
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch: SDPA with a float mask everywhere
    flex_attention = create_block_mask = None

# Each new (length, batch) shape compiles the kernel once more; training, validation and evaluation
# at several lengths can pass Dynamo's default limit of 8 shapes, after which FlexAttention would run
# its unfused reference (a (B, H, Tq, Tk) score tensor) with only a warning. Raised once, when the
# kernel is first compiled.
RECOMPILE_LIMIT = 64
# Smallest head dim given to the kernel: Triton's matrix products take blocks of 16 or more, and in
# the first GPU run (torch 2.11, H200) the one failing case was head dim 8 (24 passed). Smaller heads
# take the float-mask SDPA path.
MIN_HEAD_DIM = 16
# FlexAttention's default backward tiles for head dims 65..128 on Hopper in bf16 (64, 128, 128, 64,
# three stages) asked for 233,472 bytes of shared memory with a bias in score_mod, over an H200's
# 232,448 (torch 2.11): the tiles each backward kernel loops over are halved there. Of the options
# benchmarks/flex_kernels.py tried (2026-11-27, H200, L = 512), these were the fastest for a learned
# bias and within 3% of the fastest for a fixed one; two stages with the default tiles were 16-29%
# slower. Sized for 2-byte elements: float32 keeps torch's own (16-wide) tiles (with these, the
# float32 backward at head dim 128 was still compiling after 150 s, in three tests of three).
WIDE_HEAD_BACKWARD = {"BLOCK_M1": 32, "BLOCK_N1": 128, "BLOCK_M2": 128, "BLOCK_N2": 32}
# At head dim 64 in bf16 it was the forward: torch 2.11's default tiles asked an H200 for 245,760
# bytes of shared memory with a bias in score_mod and did not compile, with or without the halved
# backward tiles (2026-11-27); 64 x 64 forward tiles compiled and ran forward + backward in 1.06 ms
# at L = 512, batch 16, 8 heads (the default tiles in two stages: 1.26 ms). Verified at head dim 64
# only; given to 25..64, where the same default tiles apply (16 and 24 passed with torch's own).
NARROW_HEAD_FORWARD = {"BLOCK_M": 64, "BLOCK_N": 64}


@functools.lru_cache(maxsize=32)
def _causal_block_mask(q_len: int, k_len: int, offset: int, device: str):
    """FlexAttention's block-sparse causal mask: key j is visible to query i when j <= offset + i
    (offset: the index of the first query among the keys; causality is by order, not position id)."""
    return create_block_mask(lambda b, h, i, j: i + offset >= j, None, None, q_len, k_len, device=device)


@functools.cache
def _compiled_flex():
    dynamo = torch._dynamo.config
    dynamo.recompile_limit = max(dynamo.recompile_limit, RECOMPILE_LIMIT)
    return torch.compile(flex_attention, dynamic=False)


def flex_biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, offset: int
) -> torch.Tensor:
    """Causal attention plus an (H, Tq, Tk) bias, added inside the kernel via score_mod; query i
    sees keys 0..offset+i. Equal to the SDPA float-mask path to the precision of q's dtype."""
    bias = bias.float()

    def add_bias(score, b, h, i, j):
        return score + bias[h, i, j]

    return _flex(q, k, v, add_bias, _causal_block_mask(q.size(2), k.size(2), offset, str(q.device)))


def flex_diagonal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Causal attention of the last Tq of Tk keys plus a bias of i - j alone, read inside the kernel
    from attention.distance_vector's (H, Tq + Tk - 1) vector: query i and key j sit on its entry
    n = i + (Tk - 1 - j) (keys counted from the last). A learned vector gets its gradient summed per
    distance by the kernel's backward; no (Tq, Tk) tensor is built forward or backward."""
    Tq, Tk = q.size(2), k.size(2)
    diagonal = diagonal.float()
    last_key = Tk - 1

    def add_bias(score, b, h, i, j):
        return score + diagonal[h, i + last_key - j]

    return _flex(q, k, v, add_bias, _causal_block_mask(Tq, Tk, Tk - Tq, str(q.device)))


def kernel_options(head_dim: int, element_size: int) -> dict | None:
    """FlexAttention's tile options for q's head dim and element size (bytes): None for torch's own."""
    if element_size != 2 or head_dim <= 24:
        return None
    return WIDE_HEAD_BACKWARD if head_dim > 64 else NARROW_HEAD_FORWARD


def _flex(q, k, v, score_mod, block_mask) -> torch.Tensor:
    # q, k, v arrive in autocast's dtype already; the kernel takes them as they are, outside autocast
    options = kernel_options(q.size(-1), q.element_size())
    with torch.autocast(q.device.type, enabled=False):
        return _compiled_flex()(q, k, v, score_mod=score_mod, block_mask=block_mask, kernel_options=options)
