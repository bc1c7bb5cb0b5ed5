"""Attention with a score bias on the CPU, through SDPA's fused kernel. A bias of i - j alone comes as
one vector of per-distance values, read as a Hankel view with the keys reversed (hankel_attention;
no (Tq, Tk) tensor). A bias the loss differentiates: SDPA's fused forward (which also gives each
row's log-sum-exp) and a backward that recomputes the probabilities a few query rows at a time
(SDPA itself routes a mask that needs a gradient to its unfused math path: slow, and it keeps a (B,
H, Tq, Tk) mask gradient), for a dense mask (BiasedAttention) or a per-distance vector
(DiagonalBiasedAttention). All are tested against the plain softmax, forward and gradient
(tests/test_attention.py)."""

from __future__ import annotations

import functools
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F

# Query rows per block of the backward, and batch elements per pass over the blocks: as many as keep
# a block's (batch, H, ROW_BLOCK, Tk) probabilities within GROUP_BUDGET elements (4 MB), at least
# one. The backward makes ~10 passes over each block's temporaries, which over the whole batch at
# once outgrow the caches; its dV and dK products sum over ROW_BLOCK rows, which at 32 leaves them
# memory-bound. At B = 16, H = 8, hd 32, T = 256 and 512 on 2 CPU threads, against SDPA's fused
# backward (2026-11-27): 64 rows in 4 MB, per-diagonal 1.11x and 0.98x, dense 1.06x and 0.95x; 32
# rows in 2 MB (before) 1.25x / 1.10x and 1.14x / 1.01x; 128 rows or 8 MB slower again.
ROW_BLOCK = 64
GROUP_BUDGET = 1 << 20
# Queries per fused-kernel call over a mask that costs no memory (a Hankel view) or already exists:
# chunks only skip future keys (a chunk computes up to its last query). Measured on 2 CPU threads
# against SDPA's causal kernel (benchmarks/attention_chunks.py, a fixed bias): without a gradient,
# one 16k window, 1024 fastest (1.07x; 256: 1.27x); forward and backward at T = 512 and 1024, 256
# fastest (0.87x and 1.04x; 1024: 1.04x and 1.36x).
EVAL_CHUNK = 1024
TRAINING_CHUNK = 256

LOG2_E = math.log2(math.e)  # exp(x) = 2^(x log2 e)
# SDPA's fused CPU kernel, called directly for the log-sum-exp its public wrapper drops
_flash_cpu = getattr(torch.ops.aten, "_scaled_dot_product_flash_attention_for_cpu", None)


def query_chunks(q_len: int, k_len: int, chunk: int) -> Iterator[tuple[int, int, int]]:
    """(s, c, keys) per chunk of `chunk` queries: queries s..s+c-1, the last q_len of the k_len keys,
    see keys 0..keys-1 only (the later ones are all in their future)."""
    for s in range(0, q_len, chunk):
        c = min(chunk, q_len - s)
        yield s, c, k_len - q_len + s + c


def fused_cpu_kernel(q: torch.Tensor) -> bool:
    """True where the functions below can run: float32 on the CPU, with SDPA's fused CPU kernel."""
    return _flash_cpu is not None and q.device.type == "cpu" and q.dtype == torch.float32


def hankel_mask(diagonal: torch.Tensor, first: int, rows: int, keys: int) -> torch.Tensor:
    """(1, H, rows, keys) view of the (H, N) per-diagonal vector whose entry (i, l) is diagonal[:,
    first + i + l]: row stride 1, no copy."""
    assert diagonal.stride(-1) == 1 and first + rows + keys - 1 <= diagonal.size(-1)
    return diagonal.as_strided((1, diagonal.size(0), rows, keys), (0, diagonal.stride(0), 1, 1),
                               diagonal.storage_offset() + first)


def hankel_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, diagonal: torch.Tensor) -> torch.Tensor:
    """Attention whose mask is constant along diagonals: `diagonal` (H, Tq + Tk - 1) from
    attention.distance_vector. With the keys reversed, the mask of query r and key j' is
    diagonal[:, r + j'], a Hankel matrix: a strided view (row stride 1) of the vector, which SDPA's
    fused kernel reads as it is. Query chunk s..s+c only sees keys 0..keys-1, the last `keys` of the
    reversed ones. The bias takes no gradient here; q, k, v may (ALiBi in training)."""
    k, v = k.flip(2), v.flip(2)  # (B, H, Tk, hd): key j' is key Tk-1-j'
    chunk = TRAINING_CHUNK if torch.is_grad_enabled() and q.requires_grad else EVAL_CHUNK
    out = []
    for s, c, keys in query_chunks(q.size(2), k.size(2), chunk):
        k_chunk, v_chunk, mask = hankel_chunk(k, v, diagonal, s, c, keys)
        out.append(F.scaled_dot_product_attention(q[:, :, s : s + c], k_chunk, v_chunk, attn_mask=mask))
    return join_query_chunks(out)


def hankel_chunk(k_rev: torch.Tensor, v_rev: torch.Tensor, diagonal: torch.Tensor, s: int, c: int, keys: int):
    """Keys, values (the last `keys` of the reversed ones: keys 0..keys-1) and (1, H, c, keys) Hankel
    mask of query chunk s..s+c-1 (query_chunks), k_rev, v_rev: (B, H, Tk, hd) with the keys reversed."""
    Tk = k_rev.size(2)
    # row r = s + i, reversed key j' = Tk - keys + l: entry n = r + j' = s + Tk - keys + i + l
    mask = hankel_mask(diagonal, s + Tk - keys, c, keys)
    return k_rev[:, :, Tk - keys :], v_rev[:, :, Tk - keys :], mask


class BiasedAttention(torch.autograd.Function):
    """softmax(q k^T / sqrt(hd) + mask) v with a gradient for the mask too, on the CPU. SDPA routes a
    mask that needs a gradient to its unfused math path (slow, and it keeps a (B, H, Tq, Tk) mask
    gradient); here the forward is SDPA's fused kernel, which also returns each row's log-sum-exp,
    and the backward (_blocked_backward) recomputes the probabilities a few query rows at a time.
    q: (B, H, Tq, hd), k, v: (B, H, Tk, hd), mask: (H, Tq, Tk) with -inf on future keys."""

    @staticmethod
    def forward(ctx, q, k, v, mask):
        out, lse = _chunked_flash(q, k.size(2), lambda s, c, keys: (k[:, :, :keys], v[:, :, :keys],
                                                                    mask[None, :, s : s + c, :keys]))
        ctx.save_for_backward(q, k, v, mask, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, mask, out, lse = ctx.saved_tensors
        mask_log2 = mask * LOG2_E
        dmask = torch.zeros_like(mask) if ctx.needs_input_grad[3] else None

        def mask_rows(a: int, e: int, keys: int) -> torch.Tensor:
            return mask_log2[:, a:e, :keys]

        def mask_grad(a: int, e: int, keys: int, grad: torch.Tensor) -> None:
            dmask[:, a:e, :keys] += grad

        dq, dk, dv = _blocked_backward(q, k, v, out, lse, grad_out, mask_rows, None if dmask is None else mask_grad)
        return dq, dk, dv, dmask


class DiagonalBiasedAttention(torch.autograd.Function):
    """BiasedAttention for a mask constant along diagonals (a learned bias of i - j at ranges of
    ids: T5, KERPLE in training), given as distance_vector's (H, Tq + Tk - 1) vector (entry n: query
    r, key j with n = r + Tk - 1 - j; -inf past the causal limit). No (Tq, Tk) tensor exists: the
    forward reads a Hankel view of the vector (keys reversed, as hankel_attention), the backward
    builds each row block's mask from it and sums the block's mask gradient along its diagonals,
    so the bias's gradient arrives per distance."""

    @staticmethod
    def forward(ctx, q, k, v, diagonal):
        diagonal = diagonal.contiguous()
        out, lse = _chunked_flash(q, k.size(2), functools.partial(hankel_chunk, k.flip(2), v.flip(2), diagonal))
        ctx.save_for_backward(q, k, v, diagonal, out, lse)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        q, k, v, diagonal, out, lse = ctx.saved_tensors
        Tq = q.size(2)
        # by m = Tq + Tk - 2 - n the mask of query r and key j is backwards[Tq - 1 - r + j]: in a
        # block of rows a..e-1 every row reads a window of backwards[Tq - e:], shifted one per row
        backwards = diagonal.flip(-1) * LOG2_E  # (H, N)
        grad = torch.zeros_like(backwards) if ctx.needs_input_grad[3] else None  # the mask's, in backwards' order

        def mask_rows(a: int, e: int, keys: int) -> torch.Tensor:  # (H, e - a, keys)
            return backwards[:, Tq - e : Tq - a + keys - 1].unfold(-1, keys, 1).flip(1)

        def mask_grad(a: int, e: int, keys: int, block: torch.Tensor) -> None:
            # row i, key j -> column j - i + rows - 1 of a (H, rows, rows + keys - 1) buffer (rows
            # sheared by one each), whose column sums are the diagonals' = backwards[Tq - e + column]
            rows = e - a
            sheared = block.new_zeros(block.size(0), rows, rows + keys - 1)
            sheared.as_strided(block.shape, (sheared.stride(0), sheared.stride(1) - 1, 1), rows - 1).copy_(block)
            grad[:, Tq - e : Tq - a + keys - 1] += sheared.sum(1)

        dq, dk, dv = _blocked_backward(q, k, v, out, lse, grad_out, mask_rows, None if grad is None else mask_grad)
        return dq, dk, dv, None if grad is None else grad.flip(-1)


def _chunked_flash(q: torch.Tensor, k_len: int, chunk_inputs) -> tuple[torch.Tensor, torch.Tensor]:
    """SDPA's fused CPU kernel over query chunks of TRAINING_CHUNK, each over its keys only:
    chunk_inputs(s, c, keys) -> (k, v, 4-D mask) of queries s..s+c-1 and keys 0..keys-1 (query_chunks).
    Returns the output (B, H, Tq, hd) and each row's log-sum-exp (B, H, Tq)."""
    outs, lses = [], []
    for s, c, keys in query_chunks(q.size(2), k_len, TRAINING_CHUNK):
        k, v, mask = chunk_inputs(s, c, keys)
        out, lse = _flash_cpu(q[:, :, s : s + c], k, v, attn_mask=mask)
        outs.append(out)
        lses.append(lse)
    return join_query_chunks(outs), join_query_chunks(lses)


def join_query_chunks(chunks: list[torch.Tensor]) -> torch.Tensor:
    """The query chunks' results along the query dim (2); one chunk as it is (cat would copy it)."""
    return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=2)


def _blocked_backward(q, k, v, out, lse, grad_out, mask_rows, mask_grad) -> tuple[torch.Tensor, ...]:
    """dq, dk, dv of softmax(q k^T / sqrt(hd) + mask) v, ROW_BLOCK query rows at a time, each only
    over the keys up to the block's last query (query r sees keys 0 .. Tk - Tq + r), a group of batch
    elements at a time (GROUP_BUDGET). The mask comes as mask_rows(a, e, keys): rows a..e-1 over keys
    0..keys-1, (H or 1, e - a, keys), times log2 e; mask_grad(a, e, keys, grad), unless None, receives
    the block's score gradient summed over the group's batch elements, to add up. out, lse: the
    forward's output and per-row log-sum-exp."""
    B, H, _, _ = q.shape
    group = max(1, GROUP_BUDGET // (H * ROW_BLOCK * k.size(2)))
    dq = torch.empty_like(q)
    dk, dv = k.new_zeros(k.shape), v.new_zeros(v.shape)  # contiguous, whatever k's and v's strides
    for b in range(0, B, group):
        g = slice(b, b + group)
        _backward_group(q[g], k[g], v[g], out[g], lse[g], grad_out[g], mask_rows, mask_grad, dq[g], dk[g], dv[g])
    return dq, dk, dv


def _backward_group(q, k, v, out, lse, grad_out, mask_rows, mask_grad, dq, dk, dv) -> None:
    """_blocked_backward for some batch elements: adds their gradients into dq, dk, dv (zeros, views)."""
    Tq, Tk = q.size(2), k.size(2)
    scale = 1 / math.sqrt(q.size(-1))
    q_scaled = q * scale
    # probabilities as 2^(log2-scaled scores): torch's exp leaves its vector path wherever the
    # result underflows (-inf, or log-probabilities below ~-87, common under a steep learned bias:
    # the whole backward 1.8x slower at ALiBi-like slopes of 1), exp2 does not
    q_log2, lse_log2 = q * (scale * LOG2_E), lse * LOG2_E
    # contiguous once: q, k, v arrive as strided views of one projection, which every row block's
    # matmul would otherwise copy again
    k, v, grad_out = k.contiguous(), v.contiguous(), grad_out.contiguous()
    # Dao 2022 (FlashAttention-2, Alg. 2): dS = P * (dP - rowsum(dO * O)), dP = dO v^T
    delta = (grad_out * out).sum(-1, keepdim=True)  # (b, H, Tq, 1)
    for a in range(0, Tq, ROW_BLOCK):
        e = min(Tq, a + ROW_BLOCK)
        keys = Tk - Tq + e  # the block's last query sees keys 0 .. keys-1
        rows = slice(a, e)
        p = q_log2[:, :, rows] @ k[:, :, :keys].transpose(-1, -2)  # (b, H, rows, keys) scores / ln 2
        p.add_(mask_rows(a, e, keys)).sub_(lse_log2[:, :, rows, None]).exp2_()  # probabilities
        dv[:, :, :keys] += p.transpose(-1, -2) @ grad_out[:, :, rows]
        ds = grad_out[:, :, rows] @ v[:, :, :keys].transpose(-1, -2)  # dP
        ds.sub_(delta[:, :, rows]).mul_(p)  # dS, the gradient of the scores (and of the mask)
        if mask_grad is not None:
            mask_grad(a, e, keys, ds.sum(0))
        dq[:, :, rows] = (ds @ k[:, :, :keys]).mul_(scale)
        dk[:, :, :keys] += ds.transpose(-1, -2) @ q_scaled[:, :, rows]
