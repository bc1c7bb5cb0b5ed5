"""`posbench compare`: the same experiment across position methods — train each under one config,
evaluate each at the same lengths, one table of numbers, a verdict per method, one plot."""

from __future__ import annotations

import csv
import io
import platform
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from rich.console import Console

from . import __version__
from .common import resolve_device
from .config import ModelConfig
from .errors import PosbenchError
from .evaluate import EvalSettings, run_report
from .fileio import atomic_write
from .plots import plot_ppl_vs_length
from .positions import METHODS, SEED_METHODS
from .presets import get_preset
from .progress import make_progress
from .runs import read_json, write_json
from .train import train


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


def method_row(report: dict, summary: dict | None, label: str | None = None) -> dict:
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


@dataclass(frozen=True)
class CompareConfig:
    """One comparison: which methods, at which size, on which text (the options of `posbench compare`)."""

    methods: Sequence[str] = SEED_METHODS
    preset: str = "quick"
    data: str = "pydocs"
    train_len: int | None = None  # training length L (None: the preset's)
    max_len: int | None = None  # longest evaluation length (None: the preset's)
    seed: int = 0
    out: Path = Path("compare")
    device: str = "auto"
    # a LayerNorm after the embedding for every method (True, runs labelled +ln) or none (False);
    # None: as each method's reference (only scaled-sinusoidal has one)
    embed_norm: bool | None = None
    # (kind, factor) pairs: each adds a row per rotary run, evaluated with rescaled frequencies
    rope_scaling: Sequence[tuple[str, float | None]] = ()


def compare(cfg: CompareConfig = CompareConfig(), runs: Sequence[str | Path] = (), console: Console | None = None,
            show_progress: bool = True) -> dict:
    """Train (or reuse / continue) one run per method in out/<label> (e.g. alibi+ln with embed_norm
    True), or take existing `runs`; evaluate all at the same lengths; write results.json, results.csv
    and ppl_vs_length.png. Rope scaling adds rows like rotary+yarn×4."""
    preset = get_preset(cfg.preset)
    # lengths: L, 2L, 4L, ... up to max_len, from each run's own training length
    settings = EvalSettings(max_len=cfg.max_len or preset.max_len, max_tokens=preset.eval_tokens,
                            device=str(resolve_device(cfg.device)))
    started = time.perf_counter()
    jobs = [(None, None, Path(r)) for r in runs]
    for m in cfg.methods if not runs else ():
        model_config, train_config = preset.configs(m, data=cfg.data, train_len=cfg.train_len, seed=cfg.seed,
                                                    device=cfg.device)
        model_config = replace(model_config, embed_norm=cfg.embed_norm)
        jobs.append((m, (model_config, train_config), Path(cfg.out) / model_config.label()))  # as tables label it
    progress = make_progress(console, disable=not show_progress)
    rows = []
    with progress:
        overall = progress.add_task("[bold]compare[/]", total=len(jobs))
        for k, (method, configs, run_dir) in enumerate(jobs):
            progress.update(overall, description=f"[bold]compare[/] {method or run_dir.name} ({k + 1}/{len(jobs)})")
            if configs is not None:
                summary = train(*configs, out=run_dir, console=console, progress=progress).summary
            else:
                summary = read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None
            rows += _evaluate_run(run_dir, summary, settings, cfg.rope_scaling, progress)
            progress.advance(overall)
    return _write_results(cfg, rows, time.perf_counter() - started)


def _evaluate_run(run_dir: Path, summary: dict | None, settings: EvalSettings,
                  rope_scaling: Sequence[tuple[str, float | None]], progress) -> list[dict]:
    """The run's row, and for a method RoPE scaling applies to, one more row per scaling."""
    report = run_report(run_dir, settings, progress)
    rows = [method_row(report, summary)]
    if METHODS[report["pos"]].rope_scalable:  # the same run again, frequencies rescaled at evaluation
        for scaling in rope_scaling:
            rows.append(method_row(run_report(run_dir, replace(settings, rope_scaling=scaling), progress), summary))
    return rows


def _write_results(cfg: CompareConfig, rows: list[dict], seconds: float) -> dict:
    results = {
        "preset": cfg.preset, "data": cfg.data, "seed": cfg.seed, "embed_norm": cfg.embed_norm,
        "wall_seconds": seconds,
        "versions": {"posbench": __version__, "torch": torch.__version__, "python": platform.python_version()},
        "configs": {row["label"]: read_json(Path(row["run"]) / "config.json") for row in rows},
        "runs": rows,
    }
    out = Path(cfg.out)
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
