"""One layer's attention on the GPU at the ALiBi paper's shape: FlexAttention with a bias against
SDPA's causal kernel (no bias), forward + backward, and the fixed cost of one call. Part of
benchmarks/gpu_check.sh (step `kernels`): it tells the kernel's own cost from the model's launches,
and which backward tiles to give FlexAttention at head dim 128 (flex.WIDE_HEAD_BACKWARD).

    python benchmarks/flex_kernels.py [--device cuda] [--lengths 512,1024] [--batch 16] [--heads 8] [--head-dim 128]

Rows: `sdpa causal` (the kernel `none`, rotary and the embeddings use), `flex causal` (FlexAttention
with no bias), then ALiBi's fixed and T5's learned per-distance bias (flex_diagonal_attention) under
each set of backward kernel options, and the same biases materialised as a (1, H, T, T) mask of q's
dtype for SDPA's cuDNN and memory-efficient kernels (the alternative to FlexAttention at short
lengths). Times are medians of CUDA-event-timed repeats after warm-up
(compiling included in the warm-up); `x sdpa` is the ratio to the first row at the same length. The
last table: one tiny call (B = H = 1, 128 tokens), whose time is all launch and dispatch.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
from common import slope_vector  # benchmarks/common.py
from torch.nn.attention import SDPBackend, sdpa_kernel

from posbench.model import flex

REPEATS = 20
# Backward kernel options tried at head dims over 64 (flex.WIDE_HEAD_BACKWARD is the current choice):
# torch's Hopper default for head dim <= 128 is tiles (64, 128, 128, 64), 3 stages, 8 warps, which
# overflowed shared memory by 1 KB with a bias (torch 2.11, H200); two stages keep the tiles. On
# 2026-11-27 (H200, L = 512): halved tiles 2.30x / 2.83x SDPA (ALiBi / T5), 2 stages 2.68x / 3.66x, 64-wide
# tiles in 2 stages 2.25x / 4.55x.
BACKWARD_OPTIONS = {
    "halved tiles": flex.WIDE_HEAD_BACKWARD,
    "2 stages": {"bwd_num_stages": 2},
    "64 tiles, 2 st.": {"BLOCK_M1": 64, "BLOCK_N1": 64, "BLOCK_M2": 64, "BLOCK_N2": 64, "bwd_num_stages": 2},
}


def median_ms(fn, device: torch.device) -> float:
    """Median milliseconds of fn() over REPEATS runs, after three warm-up runs (the first compiles)."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(REPEATS):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize(device)
            times.append(start.elapsed_time(end))
        else:
            begin = time.perf_counter()
            fn()
            times.append((time.perf_counter() - begin) * 1e3)
    return statistics.median(times)


def per_distance_bias(n_head: int, length: int, device: torch.device, learned: bool) -> torch.Tensor:
    """common.slope_vector: ALiBi's fixed bias, or (learned) the same values as a leaf with a gradient,
    standing in for T5's bucket table."""
    return slope_vector(n_head, length, device).requires_grad_(learned and device.type == "cuda")


def attention_step(attend, q, k, v, backward: bool):
    """fn() running attend(q, k, v), and with backward its backward from a fixed gradient."""
    grad_out = torch.randn_like(q)

    def step():
        out = attend(q, k, v)
        if backward:
            out.backward(grad_out)

    return step


def dense_bias(vector: torch.Tensor, length: int, dtype: torch.dtype) -> torch.Tensor:
    """(1, H, T, T) causal bias of q's dtype from the per-distance vector: entry n = i - j + T - 1."""
    i = torch.arange(length, device=vector.device)[:, None]
    j = torch.arange(length, device=vector.device)[None]
    return vector[:, i - j + length - 1].masked_fill(j > i, float("-inf")).to(dtype)[None]


def sdpa_backends(length: int, vector: torch.Tensor, fixed: bool) -> dict:
    """SDPA with the bias materialised in q's dtype, on each fused backend that takes a bias: a fixed
    bias built once (as a model would cache it), a learned one rebuilt from its vector every call."""
    rows = {}
    for backend in (SDPBackend.CUDNN_ATTENTION, SDPBackend.EFFICIENT_ATTENTION):
        built = {}  # a fixed bias by dtype

        def attend(q, k, v, backend=backend, built=built):
            if not fixed or q.dtype not in built:
                built[q.dtype] = dense_bias(vector, length, q.dtype)
            with sdpa_kernel(backend):
                return F.scaled_dot_product_attention(q, k, v, attn_mask=built[q.dtype])

        rows[f"sdpa + bias, {backend.name.split('_')[0].lower()}"] = attend
    return rows


def variants(n_head: int, length: int, device: torch.device, all_rows: bool = True) -> dict:
    causal_mask = flex._causal_block_mask(length, length, 0, str(device))
    rows = {
        "sdpa causal": lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True),
        "flex causal": lambda q, k, v: flex._compiled_flex()(q, k, v, block_mask=causal_mask),
    }
    for name, learned in (("alibi", False), ("t5", True)):
        vector = per_distance_bias(n_head, length, device, learned)
        for label, options in BACKWARD_OPTIONS.items():
            rows[f"{name}, {label}"] = lambda q, k, v, vector=vector, options=options: with_options(
                options, lambda: flex.flex_diagonal_attention(q, k, v, vector))
        if all_rows:
            dense = sdpa_backends(length, vector, fixed=not learned)
            rows.update({f"{name}, {label}": attend for label, attend in dense.items()})
    return rows


def with_options(options: dict, attend):
    saved = flex.WIDE_HEAD_BACKWARD
    flex.WIDE_HEAD_BACKWARD = options
    try:
        return attend()
    finally:
        flex.WIDE_HEAD_BACKWARD = saved


def report(args: argparse.Namespace, device: torch.device, length: int) -> None:
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backward = device.type == "cuda"  # FlexAttention has no CPU backward
    shape = (args.batch, args.heads, length, args.head_dim)
    q, k, v = (torch.randn(shape, device=device, dtype=dtype, requires_grad=backward) for _ in range(3))
    print(f"\nL = {length}, batch {args.batch}, {args.heads} heads of {args.head_dim}, {dtype}, "
          f"{'forward + backward' if backward else 'forward'}")
    baseline = None
    for label, attend in variants(args.heads, length, device).items():
        try:
            ms = median_ms(attention_step(attend, q, k, v, backward), device)
        except Exception as error:  # noqa: BLE001 - a variant the kernel refuses is reported, not fatal
            print(f"  {label:24s} failed: {type(error).__name__}: {str(error).splitlines()[0][:100]}")
            continue
        baseline = baseline or ms
        print(f"  {label:24s} {ms:8.3f} ms  {ms / baseline:5.2f}x sdpa")


def call_overhead(args: argparse.Namespace, device: torch.device) -> None:
    print("\none tiny call (B = H = 1, 128 tokens): launch and dispatch, forward + backward")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    backward = device.type == "cuda"
    q, k, v = (torch.randn(1, 1, 128, args.head_dim, device=device, dtype=dtype, requires_grad=backward)
               for _ in range(3))
    for label, attend in list(variants(1, 128, device, all_rows=False).items())[:3]:
        step = attention_step(attend, q, k, v, backward)
        for _ in range(3):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        begin = time.perf_counter()
        for _ in range(REPEATS):
            step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        print(f"  {label:24s} {(time.perf_counter() - begin) / REPEATS * 1e6:8.0f} us per call (host clock)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--lengths", default="512,1024")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--head-dim", type=int, default=128)
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"torch {torch.__version__}, {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}")
    for length in (int(n) for n in args.lengths.split(",")):
        report(args, device, length)
    call_overhead(args, device)


if __name__ == "__main__":
    main()
