"""The attention backward of the learned-bias methods (T5, KERPLE, FIRE) in training on the CPU,
against SDPA's own fused backward of plain causal attention.

    python benchmarks/attention_backward.py [--train-len 256,512] [--batch 16] [--dim 256] [--heads 8]
                                            [--steps 8] [--threads 2]

Times one layer's backward at the training shape (B, H, T, d / H) through BiasedAttention
(posbench/model/biased_attention.py) for three biases: a mild one (the methods at initialisation) and two steep
ones, ALiBi-like slopes of 0.3 and 1 per token (what a learned locality bias may grow into; most
log-probabilities then lie below -87, where exp underflows). Each is timed in turns with SDPA's
fused causal backward (no bias) in every round; a ratio is the median over rounds of the two times
within a round, printed with the middle half of those ratios. The steep rows check that the
backward's cost does not depend on the bias's values (torch's exp leaves its vector path on
underflow, 1.8x the whole backward at slope 1; the backward uses exp2, which does not).
"""

from __future__ import annotations

import statistics
import time

import torch
import torch.nn.functional as F
from common import paired_ratio, paired_times, parse_shape_args  # benchmarks/common.py

from posbench.model.biased_attention import BiasedAttention

STEEP_SLOPES = (0.3, 1.0)


def backward_step(attend, q, k, v, grad_out):
    """A function that runs attend(q, k, v) with a gradient and times its backward alone."""

    def step() -> float:
        leaves = [t.detach().requires_grad_() for t in (q, k, v)]
        out = attend(*leaves)
        start = time.perf_counter()
        out.backward(grad_out)
        return time.perf_counter() - start

    return step


def biases(n_head: int, length: int) -> dict[str, torch.Tensor]:
    """{label: (H, T, T) learnable bias with -inf on future keys}: mild, then the steep slopes."""
    distance = (torch.arange(length)[:, None] - torch.arange(length)[None, :]).float()  # (T, T) i - j
    mild = torch.randn(n_head, length, length, generator=torch.Generator().manual_seed(0)) * 0.5
    found = {"mild (N(0, 0.5))": mild}
    found |= {f"steep (slope {s})": -s * distance.clamp(min=0).expand(n_head, -1, -1) for s in STEEP_SLOPES}
    return {label: b.masked_fill(distance < 0, float("-inf")).requires_grad_() for label, b in found.items()}


def report(args) -> None:
    head_dim = args.dim // args.heads
    torch.manual_seed(0)
    q, k, v, grad_out = (torch.randn(args.batch, args.heads, args.train_len, head_dim) for _ in range(4))
    steps = {"sdpa": backward_step(lambda *t: F.scaled_dot_product_attention(*t, is_causal=True), q, k, v, grad_out)}
    for label, bias in biases(args.heads, args.train_len).items():
        steps[label] = backward_step(lambda *t, bias=bias: BiasedAttention.apply(*t, bias), q, k, v, grad_out)
    times = paired_times(steps, args.steps)
    print(f"threads {args.threads}, B={args.batch}, H={args.heads}, T={args.train_len}, head dim {head_dim}, "
          f"{args.steps} rounds in turns")
    print(f"{'bias':22s} {'backward ms':>12s} {'x SDPA causal':>14s} {'middle half':>12s}")
    for label in steps:
        ratio, low, high = paired_ratio(times, "sdpa", label)  # time of label / time of sdpa
        print(f"{label:22s} {1000 * statistics.median(times[label]):12.1f} {ratio:14.2f} "
              f"{low:5.2f}-{high:<6.2f}")
    print()


def main() -> None:
    args = parse_shape_args(__doc__, steps=8, lengths="256,512", dim=256)
    for length in args.lengths:
        args.train_len = length
        report(args)


if __name__ == "__main__":
    main()
