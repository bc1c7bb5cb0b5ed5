"""Query-chunk size of the biased attention paths on the CPU (biased_attention.TRAINING_CHUNK and
EVAL_CHUNK): each chunk only computes up to its last query's keys, so smaller chunks skip more of the
future, larger ones keep SDPA's fused kernel in its larger blocks.

    python benchmarks/attention_chunks.py [--train-len 512,1024] [--batch 16] [--dim 256] [--heads 8]
                                          [--steps 9] [--threads 2]

At each length: forward + backward of one layer's attention with a fixed per-distance bias (ALiBi in
training: hankel_attention) and with a learned one (T5 / KERPLE in training: DiagonalBiasedAttention),
at each chunk size, and then one 16,384-token window's forward without gradient (evaluation, batch
1), each against SDPA's causal kernel (no bias) timed in the same round: the median over rounds of
the ratio of the two times (< 1: faster than causal SDPA).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from common import paired_times, parse_shape_args, round_ratios, slope_vector  # benchmarks/common.py

from posbench.model import biased_attention
from posbench.model.biased_attention import DiagonalBiasedAttention, hankel_attention

CHUNKS = (128, 256, 512, 1024, 2048)
EVAL_LENGTH = 16384


def timed(attend, inputs, grad_out, chunk_name: str | None, chunk: int):
    """A function that runs attend(q, k, v) at the chunk size (forward and, with grad_out, backward)."""

    def step() -> float:
        if chunk_name is not None:
            setattr(biased_attention, chunk_name, chunk)
        leaves = [t.detach().requires_grad_(grad_out is not None) for t in inputs]
        start = time.perf_counter()
        with torch.set_grad_enabled(grad_out is not None):
            out = attend(*leaves)
            if grad_out is not None:
                out.backward(grad_out)
        return time.perf_counter() - start

    return step


def report(label: str, inputs, vector, grad: bool, rounds: int) -> None:
    grad_out = torch.randn_like(inputs[0]) if grad else None
    causal = timed(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True), inputs, grad_out, None, 0)
    steps = {"causal": causal}
    name = "TRAINING_CHUNK" if grad else "EVAL_CHUNK"
    learned = vector.clone().requires_grad_()
    for chunk in CHUNKS:
        steps[("fixed bias", chunk)] = timed(lambda *t: hankel_attention(*t, vector), inputs, grad_out, name, chunk)
        if grad:
            steps[("learned bias", chunk)] = timed(lambda *t: DiagonalBiasedAttention.apply(*t, learned), inputs,
                                                   grad_out, name, chunk)
    times = paired_times(steps, rounds)
    for kind in ("fixed bias", "learned bias"):
        # per round, the chunked path's time over causal SDPA's
        ratios = {chunk: statistics.median(round_ratios(times, "causal", (kind, chunk)))
                  for chunk in CHUNKS if (kind, chunk) in times}
        if ratios:
            cells = "  ".join(f"{chunk}: {r:.2f}x" for chunk, r in ratios.items())
            print(f"{label}, {kind:12s} time vs causal SDPA by chunk: {cells}")


def main() -> None:
    args = parse_shape_args(__doc__, steps=9, lengths="512,1024", dim=256)
    head_dim = args.dim // args.heads
    torch.manual_seed(0)
    defaults = biased_attention.TRAINING_CHUNK, biased_attention.EVAL_CHUNK
    for length in args.lengths:
        inputs = [torch.randn(args.batch, args.heads, length, head_dim) for _ in range(3)]
        report(f"T={length} forward + backward", inputs, slope_vector(args.heads, length), True, args.steps)
    inputs = [torch.randn(1, args.heads, EVAL_LENGTH, head_dim) for _ in range(3)]
    report(f"T={EVAL_LENGTH} forward, no gradient", inputs, slope_vector(args.heads, EVAL_LENGTH), False,
           max(3, args.steps // 3))
    biased_attention.TRAINING_CHUNK, biased_attention.EVAL_CHUNK = defaults
    print(f"(now: TRAINING_CHUNK {defaults[0]}, EVAL_CHUNK {defaults[1]})")


if __name__ == "__main__":
    main()
