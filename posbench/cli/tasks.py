"""`posbench tasks`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from ..experiments.compare import parse_methods
from ..experiments.presets import TASK_PRESETS
from ..positions import METHODS, TEMPERATURES
from ..tasks.data import RETRIEVAL, TASKS
from ..tasks.run import TasksConfig, mean_accuracy, parse_tasks, run_tasks
from . import app, console

DEFAULT = TasksConfig()


def tasks_table(results: dict) -> Table:
    """Rows = (task, method), columns = instance lengths: exact-match accuracy (mean over seeds; the
    best per task and length in bold green), then per-token accuracy at the longest length."""
    rows = results["runs"]
    lengths = sorted({r["length"] for row in rows for r in row["results"]})
    L = sorted({row["train_max_len"] for row in rows})
    seeds = f", mean of {results['seeds']} seeds" if results["seeds"] > 1 else ""
    table = Table(title=f"exact match by length (trained on <= {', '.join(map(str, L))} tokens{seeds})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1),
                  collapse_padding=True)
    table.add_column("task", style="bold")
    table.add_column("method", style="bold", no_wrap=True)
    for n in lengths:
        table.add_column(str(n), justify="right")
    table.add_column("tok acc", justify="right")
    for task in dict.fromkeys(row["task"] for row in rows):
        labels = list(dict.fromkeys(row["label"] for row in rows if row["task"] == task))
        acc = {(lab, n): mean_accuracy(rows, task, lab, n) for lab in labels for n in lengths}
        best = {n: max((v for (_, m), v in acc.items() if m == n and v is not None), default=None) for n in lengths}
        for i, label in enumerate(labels):
            cells = []
            for n in lengths:
                v = acc[(label, n)]
                text = "n/a" if v is None else f"{v:.2f}"
                cells.append(f"[bold green]{text}[/]" if v is not None and v == best[n] else text)
            last = [r["token_accuracy"] for row in rows if row["task"] == task and row["label"] == label
                    for r in row["results"] if r["length"] == lengths[-1] and r["token_accuracy"] is not None]
            tok = f"{sum(last) / len(last):.2f}" if last else "n/a"
            table.add_row(task if i == 0 else "", label, *cells, tok, end_section=i == len(labels) - 1)
    return table


def ranking_lines(results: dict) -> list[str]:
    """The mean reciprocal rank over tasks per method, best first, with its interval over seeds."""
    ranking = results.get("ranking") or {}
    lines = [f"  {label:18s} {r['mrr']:.2f}" + (f" [{r['mrr_ci'][0]:.2f}–{r['mrr_ci'][1]:.2f}]" if r["mrr_ci"] else "")
             for label, r in sorted(ranking.items(), key=lambda item: -item[1]["mrr"])]
    return ["mean reciprocal rank over tasks (exact match past L; Kazemnejad et al. 2023), 95% interval over seeds:",
            *lines] if lines else []


@app.command("tasks")
def tasks_command(
    task: str = typer.Option(",".join(DEFAULT.tasks), help="Tasks, comma-separated; any of " + ", ".join(TASKS)
                             + "; 'retrieval' for the retrieval suite (" + ", ".join(RETRIEVAL) + ")."),
    pos: str = typer.Option(",".join(DEFAULT.methods), help="Methods, comma-separated; any of "
                            + ", ".join(METHODS) + ", each with an optional +TEMPERATURE ("
                            + ", ".join(TEMPERATURES) + ")."),
    preset: str = typer.Option(DEFAULT.preset, help="Experiment size: "
                               + "; ".join(f"{k}: {v.description}" for k, v in TASK_PRESETS.items()) + "."),
    seeds: int = typer.Option(DEFAULT.seeds, help="Training seeds per (task, method): 0..N-1."),
    out: Path = typer.Option(DEFAULT.out, help="Folder for the runs (<task>/<method>) and results.json/csv/png."),
    device: str = typer.Option(DEFAULT.device, help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    random_positions: int = typer.Option(DEFAULT.random_positions, help="Randomized positions (Ruoss et al. "
                                         "2023): train and score each instance at sorted distinct positions "
                                         "drawn from [0, M) instead of 0..n-1; runs labelled <method>+rpM."),
    pose: int = typer.Option(DEFAULT.pose, "--pose", metavar="M", help="PoSE (Zhu et al. 2024): train at two "
                             "chunks of ids, the second skipped so they reach up to M - 1; scored at 0..n-1; runs "
                             "labelled <method>+poseM."),
    precision: str = typer.Option(DEFAULT.precision, help="CPU training precision: fp32, bf16 or auto (bf16 "
                                  "where the CPU has bf16 instructions)."),
    jobs: int | None = typer.Option(DEFAULT.jobs, help="Train and evaluate this many runs side by side, each on "
                                    "its share of the CPU threads (1: one at a time). Default: 2 on a CPU with two "
                                    "threads or more, else 1 (POSBENCH_JOBS sets it)."),
) -> None:
    """Train a fresh model per (task, method) on instances no longer than L (reusing finished runs
    in --out), score exact match on fresh instances of L up to 4L, print one table and write
    results.json, results.csv, accuracy_vs_length.png and passkey_heatmap.png."""
    cfg = TasksConfig(parse_tasks(task), parse_methods(pos), preset, seeds, out, device, random_positions, precision,
                      jobs, pose)
    results = run_tasks(cfg, console, show_progress=not quiet)
    console.print(tasks_table(results))
    chance = ", ".join(f"{t} {c:.2f}" for t, c in results["chance"].items())
    console.print(f"per-token chance: {chance}; wall time {results['wall_seconds']:.0f} s", highlight=False)
    for line in ranking_lines(results):
        console.print(line, highlight=False)
    plots = "accuracy_vs_length.png" + (", passkey_heatmap.png" if "passkey" in results["chance"] else "")
    console.print(f"wrote {out}/results.json, results.csv, {plots}", highlight=False)
