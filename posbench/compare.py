"""`posbench compare`: the same experiment across position methods — train each under one config,
evaluate each at the same lengths, one table of numbers, a verdict per method, one plot."""

from __future__ import annotations

import csv
import io
import platform
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from . import __version__
from .errors import PosbenchError
from .evaluate import EvalSettings, run_report
from .fileio import atomic_write
from .positions import METHODS
from .presets import get_preset
from .progress import make_progress
from .runs import read_json, write_json
from .train import resolve_device, train

ROTARY_METHODS = ("rotary", "xpos")  # the runs --rope-scaling applies to
SEED_METHODS = ("none", "learned", "sinusoidal", "scaled-sinusoidal", "rotary", "alibi", "t5")


def parse_rope_scaling(text: str | None) -> list[tuple[str, float | None]]:
    """'linear,yarn:4' -> [('linear', None), ('yarn', 4.0)]; no factor: longest length / L."""
    specs = []
    for part in filter(None, (p.strip() for p in (text or "").split(","))):
        kind, _, factor = part.partition(":")
        try:
            specs.append((kind, float(factor) if factor else None))
        except ValueError:
            raise PosbenchError(f"--rope-scaling wants KIND[:FACTOR] items like yarn:4, got '{part}'") from None
    return specs


def parse_methods(text: str) -> list[str]:
    methods = [m.strip() for m in text.split(",") if m.strip()]
    if not methods:
        raise PosbenchError("--pos is empty")
    for m in methods:
        if m not in METHODS:
            from .model import ModelConfig

            ModelConfig(pos=m)  # raises the registry's error, with its did-you-mean
    return list(dict.fromkeys(methods))


def verdict(results: Sequence[dict], train_len: int) -> str:
    """Read off the numbers, never the method's name: flat (<= 1.1x the perplexity at L at every
    length), explodes (> 2x somewhere: say from which length), or degrades in between."""
    base = next((r["ppl"] for r in results if r["length"] == train_len and r["ppl"] is not None), None)
    if base is None:
        return "no perplexity at the training length"
    longer = [r for r in results if r["length"] > train_len]
    if longer and all(r["ppl"] is None for r in longer):
        return "cannot run past L"
    ratios = [(r["length"], r["ppl"] / base) for r in longer if r["ppl"] is not None]
    worst = max((ratio for _, ratio in ratios), default=1.0)
    if worst <= 1.1:
        return "extrapolates" + (f" (improves to {min(r for _, r in ratios):.2f}x)" if ratios and
                                 min(r for _, r in ratios) < 0.97 else "")
    exploded = [length for length, ratio in ratios if ratio > 2]
    if exploded:
        return f"explodes by {exploded[0] / train_len:g}xL (up to {worst:.1f}x)"
    return f"degrades (up to {worst:.2f}x)"


def summarise(report: dict, summary: dict | None, label: str | None = None) -> dict:
    """One method's row: the eval-extrapolate entry plus its label (the method as tables show it,
    e.g. "alibi+ln"), params, speed, ppl at L, ratio, verdict."""
    L = report["train_len"]
    by_length = {r["length"]: r["ppl"] for r in report["results"]}
    longest = max(by_length)
    at_l, at_max = by_length.get(L), by_length[longest]
    return {
        **report,
        "label": label or report.get("label") or report["pos"],
        "params": summary.get("params") if summary else None,
        "train_tokens_per_s": summary.get("tokens_per_s") if summary else None,
        "val_ppl": summary.get("val_ppl") if summary else None,
        "ppl_at_L": at_l,
        "max_len_ratio": at_max / at_l if at_l and at_max else None,
        "verdict": verdict(report["results"], L),
    }


def compare(
    runs: Sequence[str | Path] = (),
    methods: Sequence[str] = SEED_METHODS,
    preset: str = "quick",
    data: str = "pydocs",
    seq_len: int | None = None,
    max_len: int | None = None,
    seed: int = 0,
    out: Path = Path("compare"),
    device: str = "auto",
    console: Console | None = None,
    show_progress: bool = True,
    embed_norm: bool | None = None,
    rope_scaling: Sequence[tuple[str, float | None]] = (),
) -> dict:
    """Train (or reuse / continue) one run per method in out/<label> (alibi+ln: embed_norm True, a
    LayerNorm after the embedding; None: as each method's reference), or take existing `runs`; evaluate
    all at the same lengths; write results.json, results.csv and ppl_vs_length.png. Each (kind, factor)
    in rope_scaling adds a row per rotary run, evaluated with rescaled frequencies (e.g. rotary+yarn×4)."""
    chosen = get_preset(preset)
    # lengths: L, 2L, 4L, ... up to max_len, from each run's own training length
    settings = EvalSettings(max_len=max_len or chosen.max_len, max_tokens=chosen.eval_tokens,
                            device=str(resolve_device(device)))
    started = time.perf_counter()
    out = Path(out)
    jobs = [(None, None, Path(r)) for r in runs]
    for m in methods if not runs else ():
        model_config, train_config = chosen.configs(m, data=data, seq_len=seq_len, seed=seed, device=device)
        model_config = replace(model_config, embed_norm=embed_norm)
        jobs.append((m, (model_config, train_config), out / model_config.label()))  # as tables label it
    progress = make_progress(console, disable=not show_progress)
    rows = []
    with progress:
        overall = progress.add_task("[bold]compare[/]", total=len(jobs))
        for k, (method, configs, run_dir) in enumerate(jobs):
            progress.update(overall, description=f"[bold]compare[/] {method or run_dir.name} ({k + 1}/{len(jobs)})")
            if configs is not None:
                result = train(*configs, out=run_dir, console=console, progress=progress)
                summary = result.summary
            else:
                summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
            report = run_report(run_dir, settings, progress)
            rows.append(summarise(report, summary))
            if report["pos"] in ROTARY_METHODS:  # the same run again, frequencies rescaled at evaluation
                for scaling in rope_scaling:
                    scaled = run_report(run_dir, replace(settings, rope_scaling=scaling), progress)
                    rows.append(summarise(scaled, summary))
            progress.advance(overall)

    results = {
        "preset": preset, "data": data, "seed": seed, "embed_norm": embed_norm,
        "wall_seconds": time.perf_counter() - started,
        "versions": {"posbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "configs": {row["label"]: read_json(Path(row["run"]) / "config.json") for row in rows},
        "runs": rows,
    }
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "results.json", results)
    atomic_write(out / "results.csv", results_csv(rows).encode())
    plot_ppl_vs_length(rows, out / "ppl_vs_length.png")
    return results


def results_csv(rows: Sequence[dict]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["pos", "label", "run", "train_len", "length", "ppl", "bpb", "tokens", "params",
                     "train_tokens_per_s", "verdict"])
    for row in rows:
        for r in row["results"]:
            writer.writerow([row["pos"], row["label"], row["run"], row["train_len"], r["length"], r["ppl"], r["bpb"],
                             r["tokens"], row["params"], row["train_tokens_per_s"], row["verdict"]])
    return buffer.getvalue()


def plot_ppl_vs_length(rows: Sequence[dict], path: Path) -> None:
    """Perplexity against evaluation length, log y, one line per method, a line at the training length."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8.5, 4.5), dpi=120)
    for row in rows:
        points = [(r["length"], r["ppl"]) for r in row["results"] if r["ppl"] is not None]
        if points:
            ax.plot(*zip(*points, strict=True), marker="o", label=row["label"])
    for L in sorted({row["train_len"] for row in rows}):
        ax.axvline(L, color="grey", linestyle="--", linewidth=1)
        ax.text(L, 1.0, f" L={L}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xlabel("evaluation length (tokens)")
    ax.set_ylabel("perplexity")
    ax.set_title("Train short, test long: perplexity by evaluation length")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never over a line
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
