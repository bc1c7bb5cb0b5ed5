"""What the training-speed benchmarks share: the model-shape and timing flags, and the timing itself."""

from __future__ import annotations

import argparse
import random
import statistics
import time

import numpy as np
import torch
import torch.nn.functional as F

from posbench import ModelConfig
from posbench.common import keep_freed_memory
from posbench.evaluation.stats import Interval, percentile_interval, resample_indices


def parse_shape_args(doc: str, steps: int, lengths: str | None = None, dim: int | None = None,
                     methods: str | None = None, repeats: int = 3, precision: bool = False) -> argparse.Namespace:
    """Parse --threads --steps --repeats --batch --train-len --dim --layers --heads (defaults: the default
    posbench model, or `dim`) and set torch's thread count. With `lengths` (a default such as
    "256,512"), --train-len takes a comma-separated list, in args.lengths (args.train_len: the first);
    with `methods`, --methods takes one too, in args.methods. Sets glibc's malloc as training does."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = ModelConfig()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per model and repeat, taken in turns")
    p.add_argument("--repeats", type=int, default=repeats, help="times the models are built afresh and timed again")
    p.add_argument("--batch", type=int, default=16)
    if lengths is None:
        p.add_argument("--train-len", "--seq-len", dest="train_len", type=int, default=defaults.train_len)
    else:
        p.add_argument("--train-len", "--seq-len", dest="lengths", default=lengths,
                       help="training lengths, comma-separated")
    p.add_argument("--dim", type=int, default=dim or defaults.d_model)
    p.add_argument("--layers", type=int, default=defaults.n_layer)
    p.add_argument("--heads", type=int, default=defaults.n_head)
    if methods is not None:
        p.add_argument("--methods", default=methods, help="position methods, comma-separated")
    if precision:
        p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                       help="bf16: also time every model under CPU bf16 autocast, against its fp32 self")
    args = p.parse_args()
    if methods is not None:
        args.methods = args.methods.split(",")
    if lengths is not None:
        args.lengths = [int(n) for n in args.lengths.split(",")]
        args.train_len = args.lengths[0]
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as posbench's training does: each step reuses the memory the last one freed
    return args


def shape_config(args: argparse.Namespace, pos: str) -> ModelConfig:
    return ModelConfig(n_layer=args.layers, n_head=args.heads, d_model=args.dim, train_len=args.train_len, pos=pos)


def slope_vector(n_head: int, length: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H, 2T - 1) per-distance vector as attention.distance_vector lays it out (entry n at i - j =
    n - (T - 1), -inf on future keys): ALiBi-like slopes 1/2, 1/4, ... per head."""
    distance = (torch.arange(2 * length - 1, device=device) - (length - 1)).float()  # i - j of entry n
    slopes = 2.0 ** -torch.arange(1, n_head + 1, device=device).float()[:, None]
    return (-slopes * distance.clamp(min=0)).masked_fill(distance < 0, float("-inf"))


def train_step(model: torch.nn.Module, batch: int, train_len: int, vocab: int):
    """A function that runs one training step of `model` (forward, cross-entropy, backward, AdamW)
    on a fixed random batch and returns its seconds."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, train_len + 1))

    def step() -> float:
        start = time.perf_counter()
        logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def paired_step_times(builders: dict, args: argparse.Namespace, also: dict | None = None) -> dict:
    """Seconds of every training step of each model, by round. `builders` maps a name to a function
    that builds the model. In each round every model takes one step, in turns (in a shuffled order,
    another each round and build: paired_times), so the steps a ratio compares lie seconds apart: a
    slow spell of a shared machine, or its clock drifting over minutes, hits both sides alike.
    args.steps rounds follow each of args.repeats fresh builds (one process's allocation can leave a
    model persistently ~20% slow on this kind of machine; a rebuild re-rolls it), the models built in
    a shuffled order each time: built always in one order, each got much the same memory at every
    rebuild, and two identical builds of `none` measured 1.03x apart across 16 rebuilds. `also` maps more
    names to functions that time something else in each round (returning seconds), e.g. the
    machine's plain matmul. Then prints the shape line."""
    vocab = ModelConfig().vocab_size
    also = also or {}
    times: dict = {key: [] for key in [*builders, *also]}
    for build_index in range(args.repeats):
        order = random.Random(build_index).sample(list(builders), len(builders))
        steps = {key: train_step(builders[key](), args.batch, args.train_len, vocab) for key in order}
        steps.update(also)
        for key, seconds in paired_times(steps, args.steps, seed=build_index).items():
            times[key] += seconds
        del steps
    print(f"threads {args.threads}, d={args.dim}, layers={args.layers}, heads={args.heads}, T={args.train_len}, "
          f"batch={args.batch}, {args.repeats} builds x {args.steps} rounds of one step per model")
    return times


def paired_times(steps: dict, rounds: int, seed: int = 0) -> dict:
    """{name: [seconds per round]}: each of `steps` (functions that time one step and return its
    seconds) is run once to warm up (allocator, optimizer state, memoised tables), then once per
    round, in turns, in an order shuffled afresh every round (seeded: a rerun repeats it). A step can
    run a few % faster or slower for what ran just before it (caches, the allocator's state); a fixed
    order, even reversed every other round, gave one model the same neighbours throughout (the A/A
    control read 1.06 at T=512 in a run of 2026-11-27), a shuffled one spreads that over every model."""
    for step in steps.values():
        step()
    order = random.Random(seed)
    times: dict = {key: [] for key in steps}
    for _ in range(rounds):
        for key in order.sample(list(steps), len(steps)):
            times[key].append(steps[key]())
    return times


def paired_ratio(times: dict, key, baseline) -> tuple[float, float, float]:
    """Speed of `key` against `baseline` (> 1: faster): the median over rounds of the ratio of their
    step times within a round, and the middle half of those ratios (25th and 75th percentiles)."""
    ratios = round_ratios(times, key, baseline)
    if len(ratios) < 2:  # one round: no spread to show
        return ratios[0], ratios[0], ratios[0]
    return statistics.median(ratios), *statistics.quantiles(ratios, n=4, method="inclusive")[::2]


def ratio_interval(times: dict, key, baseline, rounds_per_build: int) -> Interval:
    """Speed of `key` against `baseline` (> 1: faster): the median over rounds of the ratio of their
    step times within a round, with its 95% interval from a bootstrap over builds (paired_step_times'
    layout: each build's rounds in a row). A build's rounds are resampled together, since one build
    can stay a few % off an identical one for all its rounds; the rounds alone would claim too
    narrow an interval. With one build there is no interval (its ends are nan)."""
    return median_interval(np.reshape(round_ratios(times, key, baseline), (-1, rounds_per_build)))


def round_ratios(times: dict, key, baseline) -> list[float]:
    """Per round, the baseline's step time over key's (> 1: key is faster)."""
    return [b / k for k, b in zip(times[key], times[baseline], strict=True)]


def median_interval(per_build: np.ndarray) -> Interval:
    """The median of (builds, rounds) values, and its 95% bootstrap interval resampling builds."""
    value = float(np.median(per_build))
    builds = len(per_build)
    if builds < 2:
        return Interval(value, float("nan"), float("nan"))
    samples = np.median(per_build[resample_indices(builds)].reshape(-1, builds * per_build.shape[1]), axis=1)
    return Interval(value, *percentile_interval(samples))


def verdict(interval: Interval, target: float, control: Interval | None = None) -> str:
    """'ok' when the whole interval lies at or above the target, 'MISS' when it lies below it,
    'unresolved' when it straddles it (more --repeats narrow the interval). With `control`, the ratio
    of two identical builds (an A/A control), the interval is first widened on both sides by how far
    the control lies from 1: an offset between identical builds that the bootstrap over builds does
    not see (a run of 2026-11-27 read 1.06 (1.04-1.14) for it at T = 256 with every order shuffled)."""
    slack = 0.0 if control is None else control_slack(control)
    if interval.low - slack >= target:
        return "ok"
    if interval.high + slack < target:
        return "MISS"
    return "unresolved"


def control_slack(control: Interval) -> float:
    """How far an A/A control (two identical builds' ratio) lies from 1: what verdict widens by."""
    return abs(control.value - 1)


def tokens_per_second(times: dict, key, args: argparse.Namespace) -> float:
    """Training tokens/s of `key` at its median step time."""
    return args.batch * args.train_len / statistics.median(times[key])
