"""Where a training step's time goes on the GPU, per position method: is the model bound by the GPU's
kernels or by the host launching them? Part of benchmarks/gpu_check.sh (step `profile`).

    python benchmarks/gpu_profile.py [--device cuda] [--pos none,alibi] [--batch-size 16] [--train-len 512]
                                     [--layers N --dim D --heads H]

For each method, the model of `--preset paper` (16 layers, d = 1024, 8 heads; bf16 autocast on CUDA)
takes two warm-up steps, then three profiled ones (torch.profiler). Printed: the wall time per step,
the kernels' time per step (the sum of their device time) and its share of the wall time, the GPU's
busy share: near 100% the kernels are what to speed up, well below it the host's launches are (a
larger batch or torch.compile would hide them) — and the kernels with the most device time.
"""

from __future__ import annotations

import argparse
import time

import torch

from posbench import GPT, ModelConfig
from posbench.experiments.bench import train_rate
from posbench.experiments.presets import CORPUS_PRESETS

STEPS = 3


def profile(pos: str, args: argparse.Namespace) -> None:
    device = torch.device(args.device)
    shape = {key: value for key, value in (("n_layer", args.layers), ("d_model", args.dim), ("n_head", args.heads))
             if value is not None}
    config = ModelConfig(pos=pos, train_len=args.train_len, **{**CORPUS_PRESETS["paper"].model, **shape})
    model = GPT(config).to(device)
    train_rate(model, args.batch_size, args.train_len, config.vocab_size, steps=2, warmup=0)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as prof:
        start = time.perf_counter()
        train_rate(model, args.batch_size, args.train_len, config.vocab_size, steps=STEPS, warmup=0)
        wall = (time.perf_counter() - start) / STEPS
    events = prof.key_averages()
    # the GPU's own events only: an op's row repeats its kernels' time, and a user annotation's
    # (AdamW.step's) on the GPU's timeline spans kernels that are counted already
    kernels = sum(e.time_range.elapsed_us() for e in prof.events()
                  if e.device_type == torch.autograd.DeviceType.CUDA and not e.is_user_annotation) / 1e6 / STEPS
    print(f"=== {pos}: {wall * 1e3:.1f} ms per step (batch {args.batch_size}, L {args.train_len}); kernels "
          f"{kernels * 1e3:.1f} ms per step, the GPU busy {kernels / wall:.0%} of it")
    sort = "self_cpu_time_total" if device.type == "cpu" else "self_device_time_total"
    try:
        print(events.table(sort_by=sort, row_limit=args.rows, max_name_column_width=60))
    except (AttributeError, KeyError):  # older torch names it cuda
        print(events.table(sort_by="self_cuda_time_total", row_limit=args.rows, max_name_column_width=60))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--pos", default="none,alibi", help="position methods, comma-separated")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--train-len", type=int, default=512)
    for flag in ("--layers", "--dim", "--heads"):
        parser.add_argument(flag, type=int, help="default: --preset paper's")
    parser.add_argument("--rows", type=int, default=15, help="kernels listed per method")
    args = parser.parse_args()
    for pos in args.pos.split(","):
        profile(pos, args)


if __name__ == "__main__":
    main()
