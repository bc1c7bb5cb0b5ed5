"""`posbench tasks`: length generalisation on algorithmic tasks. For each (task, method) train a fresh
model on instances no longer than L, then score exact match and per-token accuracy on fresh instances
of L up to 4L (Kazemnejad et al. 2023; Ruoss et al. 2023), and passkey retrieval by length and depth
(Mohtashami & Jaggi 2023). Runs live in out/<task>/<method> and are reused or resumed like compare's."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from rich.console import Console
from rich.progress import Progress

from ..common import DEVICE, resolve_device
from ..errors import LengthError, PosbenchError
from ..evaluation.scoring import forward, position_draw
from ..evaluation.stats import rank, t_interval, wilson_interval
from ..experiments.jobs import resolve_jobs, run_jobs
from ..experiments.presets import TaskPreset, get_preset
from ..experiments.results import csv_text, write_results
from ..model.gpt import GPT
from ..positions import SEED_METHODS
from ..progress import make_progress
from ..runs.folder import load_run
from ..train import TrainConfig, train
from .data import RETRIEVAL, TASKS, VOCAB_SIZE, TaskSampler, answer_hits, eval_batch, get_task
from .plots import plot_accuracy_vs_length, plot_passkey_heatmap


@dataclass(frozen=True)
class TasksConfig:
    """The options of `posbench tasks`: which tasks, which methods, how big, how many seeds."""

    # passkey: the one task that >= 4 of the 7 seed methods learn in distribution (>= 0.95 exact match)
    # at the quick preset (docs/tasks.md); copy, reverse and recall on request: at 2,000 steps (copy:
    # also 5,000) most methods learn only their shorter instances
    tasks: Sequence[str] = ("passkey",)
    methods: Sequence[str] = SEED_METHODS
    preset: str = "quick"
    seeds: int = 1
    out: Path = Path("tasks")
    device: str = DEVICE
    # randomized positions (Ruoss et al. 2023): train and score at sorted draws from [0, M); None: 0..n-1
    random_positions: int | None = None
    precision: str = TrainConfig.precision  # CPU training precision (TrainConfig.precision)
    jobs: int | None = None  # runs trained and scored side by side (experiments/jobs.py; None: resolve_jobs')
    # PoSE (Zhu et al. 2024): train at two skipped chunks of ids reaching up to M - 1; scored at 0..n-1
    pose: int | None = None


def parse_tasks(text: str) -> list[str]:
    """'passkey,copy' -> the names; 'retrieval' stands for the retrieval suite (task_data.RETRIEVAL)."""
    parts = [t.strip() for t in text.split(",") if t.strip()]
    names = list(dict.fromkeys(n for t in parts for n in (RETRIEVAL if t == "retrieval" else (t,))))
    if not names:
        raise PosbenchError("--task is empty")
    for name in names:
        get_task(name)
    return names


@torch.no_grad()
def score(model: GPT | torch.nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 100,
          random_positions: int | None = None) -> dict:
    """Exact match and per-token accuracy (teacher-forced) of `model` on (x, y), with the Wilson
    interval on exact match; None where the positions cannot be encoded (the LengthError a method's
    table, or a draw from [0, random_positions) too small, raises; scoring.py does the same). A run
    trained with randomized positions is scored at fixed-seed draws from [0, M), as the reference."""
    n = len(x)
    device, draw = next(model.parameters()).device, position_draw(random_positions)
    exact = right = total = 0
    try:
        for s in range(0, n, batch):
            logits = forward(model, x[s:s + batch].to(device), draw)
            e, r, t = answer_hits(logits, y[s:s + batch].to(device))
            exact, right, total = exact + e, right + r, total + t
    except LengthError:  # every batch has the same length: the first one says so
        return {"accuracy": None, "accuracy_ci": None, "token_accuracy": None, "instances": n}
    return {"accuracy": exact / n, "accuracy_ci": list(wilson_interval(exact, n)),
            "token_accuracy": right / max(total, 1), "instances": n}


def evaluate_task(model: torch.nn.Module, task: str, preset: TaskPreset, seed: int = 0,
                  random_positions: int | None = None) -> tuple[list, list]:
    """(rows by length, rows by length x depth: passkey only) on fresh instances, the same ones for
    every method and training seed (`seed` picks the evaluation set)."""
    rp = random_positions
    rows = [{"length": n, **score(model, *eval_batch(task, n, preset.instances, seed), random_positions=rp)}
            for n in preset.lengths()]
    depths = [{"length": n, "depth": d,
               **score(model, *eval_batch(task, n, preset.depth_instances, seed, d), random_positions=rp)}
              for n in preset.lengths() for d in preset.depths] if task == "passkey" else []
    return rows, depths


def task_run_label(method: str, random_positions: int | None, pose: int | None = None) -> str:
    """The method as the table shows it: e.g. alibi, alibi+rp256 with randomized positions up to 256,
    alibi+pose256 with PoSE's ids up to 256."""
    suffix = "" if random_positions is None else f"+rp{random_positions}"
    return method + suffix + ("" if pose is None else f"+pose{pose}")


def run_dir_for(out: Path, task: str, label: str, seed: int) -> Path:
    return out / task / (label if seed == 0 else f"{label}-seed{seed}")


def train_task(task: str, method: str, seed: int, preset: TaskPreset, run_dir: Path, device: str = DEVICE,
               console: Console | None = None, progress=None, show_progress: bool = True,
               random_positions: int | None = None, precision: str = TrainConfig.precision,
               pose: int | None = None) -> dict:
    """Train (or reuse / resume) one (task, method, seed) run into run_dir; its summary."""
    L, steps = preset.train_max_len, preset.train["steps"]
    model_config, train_config = preset.configs(
        method, dict(vocab_size=VOCAB_SIZE, train_len=L), data=f"task:{task}", train_len=L, seed=seed, device=device,
        vocab_size=VOCAB_SIZE, eval_every=steps, save_every=max(1, steps // 4), random_positions=random_positions,
        precision=precision, pose=pose)
    batches = TaskSampler(task, L, train_config.batch_size, seed, max_position=random_positions, pose=pose)
    return train(model_config, train_config, out=run_dir, console=console, show_progress=show_progress,
                 progress=progress, batches=batches).summary


def run_tasks(cfg: TasksConfig = TasksConfig(), console: Console | None = None, show_progress: bool = True) -> dict:
    """Train and score every (task, method, seed); write results.json, results.csv,
    accuracy_vs_length.png and (with passkey) passkey_heatmap.png under cfg.out."""
    preset = get_preset("tasks", cfg.preset)
    for task in cfg.tasks:
        get_task(task, max(preset.lengths()))
    if cfg.seeds < 1:
        raise PosbenchError(f"--seeds must be positive, got {cfg.seeds}")
    side_by_side = resolve_jobs(cfg.jobs, cfg.device)
    started = time.perf_counter()
    jobs = [(t, m, s) for t in cfg.tasks for m in cfg.methods for s in range(cfg.seeds)]
    rows: dict[int, dict] = {}
    progress = make_progress(console, disable=not show_progress)

    def starting(k: int) -> None:
        task, method, _ = jobs[k]
        progress.update(overall, description=f"[bold]tasks[/] {task} {method} ({k + 1}/{len(jobs)})")

    def finished(k: int, outcome: dict | Exception) -> None:
        if isinstance(outcome, Exception):
            raise outcome  # a task run has no failure row: the error is the command's
        rows[k] = outcome
        progress.advance(overall)

    with progress:
        overall = progress.add_task(f"[bold]tasks[/] ({side_by_side} at a time)" if side_by_side > 1
                                    else "[bold]tasks[/]", total=len(jobs))
        run_jobs(functools.partial(_task_job, cfg, preset), jobs, side_by_side, finished, progress, starting)
    return _write_results(cfg, preset, [rows[k] for k in sorted(rows)], time.perf_counter() - started)


def _task_job(cfg: TasksConfig, preset: TaskPreset, job: tuple[str, str, int], progress: Progress | None) -> dict:
    """Train (or reuse) and score one (task, method, seed) run: its row. progress None: quietly."""
    task, method, seed = job
    label = task_run_label(method, cfg.random_positions, cfg.pose)
    run_dir = run_dir_for(Path(cfg.out), task, label, seed)
    summary = train_task(task, method, seed, preset, run_dir, cfg.device, progress=progress,
                         show_progress=progress is not None, random_positions=cfg.random_positions,
                         precision=cfg.precision, pose=cfg.pose)
    model, _, _ = load_run(run_dir, str(resolve_device(cfg.device)))
    results, depths = evaluate_task(model, task, preset, random_positions=cfg.random_positions)
    return {"task": task, "pos": method, "label": label, "seed": seed, "run": str(run_dir),
            "train_max_len": preset.train_max_len, "params": summary.get("params"),
            "train_seconds": summary.get("train_seconds"), "train_loss": summary.get("train_loss"),
            "results": results, **({"depths": depths} if depths else {})}


def _write_results(cfg: TasksConfig, preset: TaskPreset, rows: list[dict], seconds: float) -> dict:
    results = {
        "preset": cfg.preset, "preset_description": preset.description, "seeds": cfg.seeds,
        "wall_seconds": seconds,
        "chance": {t: TASKS[t].chance for t in cfg.tasks},
        "runs": rows,
        "ranking": mean_reciprocal_rank(rows) if len({row["label"] for row in rows}) > 1 else {},
    }
    out = write_results(cfg.out, results, results_csv(rows))
    plot_accuracy_vs_length(rows, out / "accuracy_vs_length.png")
    if any("depths" in row for row in rows):
        plot_passkey_heatmap([row for row in rows if "depths" in row], out / "passkey_heatmap.png")
    return results


def results_csv(rows: Sequence[dict]) -> str:
    """One line per (run, length), then one per (passkey run, length, depth); depth empty otherwise."""
    columns = ["task", "pos", "label", "seed", "train_max_len", "length", "depth", "accuracy", "accuracy_lo",
               "accuracy_hi", "token_accuracy", "instances"]
    return csv_text(columns, ([row["task"], row["pos"], row["label"], row["seed"], row["train_max_len"], r["length"],
                               r.get("depth", ""), r["accuracy"], *(r["accuracy_ci"] or (None, None)),
                               r["token_accuracy"], r["instances"]]
                              for row in rows for r in row["results"] + row.get("depths", [])))


def mean_reciprocal_rank(rows: Sequence[dict]) -> dict[str, dict]:
    """Kazemnejad et al. 2023's ranking across tasks: per task and seed, the methods ranked by exact
    match averaged over the lengths past L (the best 1, ties sharing their average rank); a method's
    score is the mean over tasks of 1 / rank. Per label: {"mrr", "mrr_ci", "per_seed"}, the mean over
    seeds with its 95% t interval (None with one seed), clipped to the values an MRR can take (1/n for
    n methods up to 1): with three seeds a t interval is wide, and bounds past those cover nothing more.
    Needs two methods or more."""
    labels = list(dict.fromkeys(row["label"] for row in rows))
    per_seed: dict[str, list[float]] = {label: [] for label in labels}
    for seed in sorted({row["seed"] for row in rows}):
        reciprocal: dict[str, list[float]] = {label: [] for label in labels}
        for task in dict.fromkeys(row["task"] for row in rows):
            mine = {row["label"]: row for row in rows if row["task"] == task and row["seed"] == seed}
            if set(mine) != set(labels):
                continue
            scores = [_past_l_accuracy(mine[label]) for label in labels]
            for label, r in zip(labels, rank([-x for x in scores]), strict=True):
                reciprocal[label].append(1 / r)
        for label in labels:
            if reciprocal[label]:
                per_seed[label].append(sum(reciprocal[label]) / len(reciprocal[label]))
    out = {}
    for label, values in per_seed.items():
        if values:
            ci = t_interval(values) if len(values) > 1 else None
            out[label] = {"mrr": sum(values) / len(values), "per_seed": values,
                          "mrr_ci": ci and [max(ci.low, 1 / len(labels)), min(ci.high, 1.0)]}
    return out


def _past_l_accuracy(row: dict) -> float:
    """Exact match averaged over the lengths past the training maximum (0 where a length is n/a)."""
    past = [r["accuracy"] or 0.0 for r in row["results"] if r["length"] > row["train_max_len"]]
    return sum(past) / len(past) if past else 0.0


def mean_accuracy(rows: Sequence[dict], task: str, label: str, length: int) -> float | None:
    """Exact match at `length` averaged over the seeds of (task, label); None where not scored."""
    values = [r["accuracy"] for row in rows if row["task"] == task and row["label"] == label
              for r in row["results"] if r["length"] == length and r["accuracy"] is not None]
    return sum(values) / len(values) if values else None
