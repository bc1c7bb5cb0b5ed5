"""Training throughput per position method, against a plain nanoGPT-style model and a plain matmul.

    python benchmarks/train_speed.py [--train-len 256,512] [--methods none,t5,...] [--threads 2]
                                     [--steps 2] [--repeats 8] [--dim 256] [--layers 4] [--heads 8] [--batch 16]
                                     [--precision bf16]

--precision bf16 times each method under CPU bf16 autocast (as `posbench train --precision bf16`)
against its own fp32 build and against bf16 `none` (targets where the CPU has AVX512-BF16: >= 1.15x at
the quick preset's shape, >= 1.5x at 4 layers, d = 256, L = 256; every method >= 0.95x bf16 none).

Prints, measured in this one run, at each training length: tokens/s of a training step (forward +
backward + AdamW) for each method and its ratio to `none` (built twice: the ratio is against the
mean of the two builds' step times in the round, and the two builds' own ratio is printed as an A/A
control); posbench `learned` against a plain pre-LN GPT of the same shape (SDPA is_causal, learned
positions, written out below); and the model's FLOP rate (posbench.experiments.bench's training_flops_per_token:
6 per weight + 12 * layers * d * T per token, PaLM appendix B) against a plain fp32 matmul of the
model's width, timed in every round too. The models take turns one step at a time
(common.paired_step_times); a ratio is the median over rounds of the two step times within one
round, so a machine whose speed drifts (this VM's swung 2x within minutes) still compares like with
like. The models are built afresh --repeats times (--steps rounds each): a build can stay a few %
off an identical one, so the 95% interval of each ratio is a bootstrap over builds
(common.ratio_interval), and a target reads `ok` only when the whole interval clears it, `MISS` when
the whole interval falls short, `unresolved` otherwise (more --repeats narrow the interval: on 2
shared CPU threads, 8 builds gave intervals about +-0.05 wide, 24 builds +-0.01 to +-0.05). Every
model-vs-model interval is read as if wider on both sides by how far the A/A control lies from 1:
two identical builds measured that far apart in this run (common.verdict).
Default shape: d = 256, the CPU speed targets'.
Targets: every method >= 0.95x none, t5 and fox >= 0.9x, cope and stick-breaking >= 0.5x (no fused
kernel computes their weights), FLOP rate >= 0.65 of the matmul's; and learned >= 0.98x plain (the
same model written twice). A composition is a method too (rotary+ssmax), and "drope (dropped)" is
DroPE after its drop, measured beside drope before it (rotary's cost).
"""

from __future__ import annotations

import functools
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F
from common import (  # benchmarks/common.py
    control_slack,
    median_interval,
    paired_step_times,
    parse_shape_args,
    ratio_interval,
    shape_config,
    tokens_per_second,
    verdict,
)
from torch import nn

from posbench import GPT, ModelConfig
from posbench.experiments.bench import training_flops_per_token
from posbench.positions import METHODS, pose_positions


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_head: int) -> None:
        super().__init__()
        self.n_head = n_head
        self.ln_1, self.ln_2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.qkv, self.proj = nn.Linear(d, 3 * d, bias=False), nn.Linear(d, d, bias=False)
        self.up, self.down = nn.Linear(d, 4 * d, bias=False), nn.Linear(4 * d, d, bias=False)

    def forward(self, x):
        B, T, D = x.shape
        q, k, v = self.qkv(self.ln_1(x)).split(D, dim=2)
        q, k, v = (t.view(B, T, self.n_head, D // self.n_head).transpose(1, 2) for t in (q, k, v))
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(B, T, D)
        x = x + self.proj(y)
        return x + self.down(F.gelu(self.up(self.ln_2(x))))


class PlainGPT(nn.Module):
    """The compact reference: nanoGPT's shape with learned positions and tied embeddings."""

    def __init__(self, c: ModelConfig) -> None:
        super().__init__()
        self.wte, self.wpe = nn.Embedding(c.vocab_size, c.d_model), nn.Embedding(c.train_len, c.d_model)
        self.blocks = nn.ModuleList(PlainBlock(c.d_model, c.n_head) for _ in range(c.n_layer))
        self.ln_f = nn.LayerNorm(c.d_model)

    def forward(self, idx):
        x = self.wte(idx) + self.wpe.weight[: idx.size(1)]
        for block in self.blocks:
            x = block(x)
        return F.linear(self.ln_f(x), self.wte.weight)


def matmul_step(rows: int, d: int, repeats: int = 10):
    """A function that times `repeats` plain fp32 (rows, d) @ (d, 4d) matmuls (the machine's rate at
    the model's width) and returns seconds, and the FLOPs it does."""
    a, b = torch.randn(rows, d), torch.randn(d, 4 * d)

    def step() -> float:
        start = time.perf_counter()
        for _ in range(repeats):
            a @ b
        return time.perf_counter() - start

    return step, 2 * rows * d * 4 * d * repeats


class Posed(nn.Module):
    """A model trained with PoSE (`--pose 4L`): each step at a fresh draw of its two skipped chunks of ids."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model, self.generator = model, torch.Generator().manual_seed(0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        T = idx.size(1)
        return self.model(idx, positions=pose_positions(T, 4 * T, self.generator))


class Bf16(nn.Module):
    """A model whose forward runs under CPU bf16 autocast, as `--precision bf16` trains (fp32 weights)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            return self.model(idx)


def bf16_report(args, names: list[str], builders: dict) -> None:
    """Every method under bf16 autocast: its tokens/s against its own fp32 build, and against bf16 none."""
    both = {**builders, **{f"{name} bf16": functools.partial(lambda b: Bf16(b()), builders[name]) for name in names}}
    times = paired_step_times(both, args)
    interval = functools.partial(ratio_interval, times, rounds_per_build=args.steps)
    print(f"{'method':22s} {'bf16 tok/s':>10s} {'bf16/fp32':>9s} {'95% interval':>13s} {'vs bf16 none':>12s}")
    for name in names:
        own, vs_none = interval(f"{name} bf16", name), interval(f"{name} bf16", "none bf16")
        print(f"{name:22s} {tokens_per_second(times, f'{name} bf16', args):10,.0f} {own.value:9.2f} "
              f"{own.low:6.2f}-{own.high:<6.2f} {vs_none.value:8.2f} ({vs_none.low:.2f}-{vs_none.high:.2f})")


def build(config: ModelConfig, dropped: bool = False) -> GPT:
    """The model of `config`; with `dropped`, a DroPE model past its drop (attention without the rotation)."""
    model = GPT(config)
    if dropped:
        model.after_step(1, 1.0)
    return model


def main() -> None:
    methods = ",".join([*METHODS, *(f"{m}+{t}" for m, t in COMPOSITIONS), DROPPED])
    args = parse_shape_args(__doc__, steps=2, repeats=8, lengths="256,512", dim=256, methods=methods, precision=True)
    for length in args.lengths:
        args.train_len = length
        if args.precision == "bf16":
            names = list(dict.fromkeys(["none", *args.methods]))
            bf16_report(args, names, {pos: functools.partial(build, shape_config(args, pos.removesuffix(DROPPED_TAG)),
                                                             pos.endswith(DROPPED_TAG)) for pos in names})
        else:
            report(args)


# the others: 0.95; CoPE and stick-breaking compute their weights outside a fused kernel (methods.md)
TARGETS = {"t5": 0.9, "fox": 0.9, "cope": 0.5, "stick-breaking": 0.5}
COMPOSITIONS = (("rotary", "ssmax"), ("none", "llama4"), ("irope", "llama4"))
DROPPED_TAG = " (dropped)"
DROPPED = "drope" + DROPPED_TAG
POSE_TAG = " (pose)"  # the method trained with PoSE's position ids up to 4L
AGAIN = "none, 2nd build"  # the yardstick built twice: how far apart two identical models measure
YARDSTICK = "none (both builds)"  # per round, the mean of the two: what every ratio is against


def report(args) -> None:
    names = list(dict.fromkeys(["none", *args.methods]))  # `none` is the yardstick, always measured
    builders = {pos: functools.partial(GPT, shape_config(args, pos)) for pos in names
                if pos != DROPPED and not pos.endswith(POSE_TAG)}
    for pos in (name for name in names if name.endswith(POSE_TAG)):  # e.g. "rotary (pose)"
        builders[pos] = functools.partial(lambda cfg: Posed(GPT(cfg)), shape_config(args, pos.removesuffix(POSE_TAG)))
    if DROPPED in names:
        builders[DROPPED] = functools.partial(build, shape_config(args, "drope"), True)
    builders[AGAIN] = builders["none"]
    if "learned" in names:
        builders["plain nanoGPT-style"] = functools.partial(PlainGPT, shape_config(args, "learned"))
    matmul, matmul_flops = matmul_step(args.batch * args.train_len, args.dim)
    times = paired_step_times(builders, args, also={"matmul": matmul})
    times[YARDSTICK] = [(a + b) / 2 for a, b in zip(times["none"], times[AGAIN], strict=True)]
    interval = functools.partial(ratio_interval, times, rounds_per_build=args.steps)
    control = interval(AGAIN, "none")  # widens every model-vs-model verdict's interval (common.verdict)
    print(f"{'method':22s} {'tokens/s':>10s} {'vs none':>8s} {'95% interval':>13s}  target")
    for name in names:
        target = TARGETS.get(name, 0.95)
        r = interval(name, YARDSTICK)
        print(f"{name:22s} {tokens_per_second(times, name, args):10,.0f} {r.value:8.2f} {r.low:6.2f}-{r.high:<6.2f}"
              f"  >= {target} {verdict(r, target, control)}")
    print(f"{AGAIN:22s} {tokens_per_second(times, AGAIN, args):10,.0f}   2nd build / 1st = {control.value:.3f} "
          f"({control.low:.3f}-{control.high:.3f}): two identical models, an A/A control; every verdict "
          f"reads its interval {control_slack(control):.3f} wider on both sides")
    if "learned" in names:
        r = interval("learned", "plain nanoGPT-style")
        print(f"{'plain nanoGPT-style':22s} {tokens_per_second(times, 'plain nanoGPT-style', args):10,.0f}   "
              f"learned / plain = {r.value:.2f} ({r.low:.2f}-{r.high:.2f}; >= 0.98 {verdict(r, 0.98, control)})")

    model = GPT(shape_config(args, "none"))
    params, flops_per_token = model.num_params(), training_flops_per_token(model)
    model_rate = flops_per_token * tokens_per_second(times, YARDSTICK, args)
    machine = matmul_flops / statistics.median(times["matmul"])
    # both timed in every round: the ratio of the two within a round, median over rounds
    flops_per_step = flops_per_token * args.batch * args.train_len
    rates = [flops_per_step / t_model / (matmul_flops / t_matmul)
             for t_model, t_matmul in zip(times[YARDSTICK], times["matmul"], strict=True)]
    r = median_interval(np.reshape(rates, (-1, args.steps)))
    print(f"model FLOP rate {model_rate / 1e9:.1f} GFLOP/s ({params:,} params, {flops_per_token / 1e6:.1f} "
          f"MFLOP/token); plain fp32 matmul {machine / 1e9:.1f} GFLOP/s; "
          f"ratio {r.value:.2f} ({r.low:.2f}-{r.high:.2f}), paired by round (>= 0.65 {verdict(r, 0.65)})\n")


if __name__ == "__main__":
    main()
