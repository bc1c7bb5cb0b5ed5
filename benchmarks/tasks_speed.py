"""Per (task, method) run of `posbench tasks`: training wall time and exact-match accuracy in
distribution (at L) and at 4L — the figures behind the task preset.

    python benchmarks/tasks_speed.py [--task copy,passkey] [--pos none,alibi] [--preset quick]
        [--threads 1] [--out /tmp/tasks-bench] [--steps N] [--batch-size N] [--lr X] [--layers N] [--dim N] [--heads N]
        [--train-max-len N]

Every run trains from scratch (the --out folder is emptied first). The overrides change the preset
for this script only: they are how the preset was calibrated. Targets: each default task reaches
>= 0.95 exact match at L for at least four of the seven seed methods; one run <= 3 minutes on 2 CPU
cores; the default `posbench tasks` <= 25 minutes.
"""

from __future__ import annotations

import argparse
import shutil
import time
from dataclasses import replace
from pathlib import Path

import torch

from posbench.experiments.presets import get_preset
from posbench.positions import SEED_METHODS
from posbench.runs.folder import load_run
from posbench.tasks.run import TasksConfig, evaluate_task, run_dir_for, train_task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default=",".join(TasksConfig().tasks))
    parser.add_argument("--pos", default=",".join(SEED_METHODS))
    parser.add_argument("--preset", default="quick")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=Path("/tmp/tasks-bench"))
    parser.add_argument("--steps", type=int)
    parser.add_argument("--batch-size", type=int)
    parser.add_argument("--lr", type=float)
    parser.add_argument("--layers", type=int)
    parser.add_argument("--dim", type=int)
    parser.add_argument("--heads", type=int)
    parser.add_argument("--train-max-len", type=int)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    preset = get_preset("tasks", args.preset)
    train = {**preset.train, **{k: v for k, v in (("steps", args.steps), ("batch_size", args.batch_size),
                                                  ("lr", args.lr)) if v is not None}}
    model = {**preset.model, **{k: v for k, v in (("n_layer", args.layers), ("d_model", args.dim),
                                                  ("n_head", args.heads)) if v is not None}}
    preset = replace(preset, train=train, model=model, train_max_len=args.train_max_len or preset.train_max_len)
    print(f"{args.threads} thread(s); model {model}; training {train}; L = {preset.train_max_len}")
    print(f"{'task':8s} {'method':18s} {'train s':>8s} {'acc@L':>6s} {'acc@4L':>7s} {'tok@4L':>7s}")
    for task in args.task.split(","):
        for method in args.pos.split(","):
            run_dir = run_dir_for(args.out, task, method, 0)
            shutil.rmtree(run_dir, ignore_errors=True)
            start = time.perf_counter()
            train_task(task, method, 0, preset, run_dir, "cpu", show_progress=False)
            seconds = time.perf_counter() - start
            rows, _ = evaluate_task(load_run(run_dir)[0], task, preset)
            first, last = rows[0], rows[-1]
            fmt = lambda v: "n/a" if v is None else f"{v:.2f}"  # noqa: E731
            print(f"{task:8s} {method:18s} {seconds:8.1f} {fmt(first['accuracy']):>6s} {fmt(last['accuracy']):>7s} "
                  f"{fmt(last['token_accuracy']):>7s}", flush=True)


if __name__ == "__main__":
    main()
