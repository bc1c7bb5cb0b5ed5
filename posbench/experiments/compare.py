"""`posbench compare`: the same experiment across position methods — train each under one config
(with --seeds, several times), evaluate each at the same lengths on the same windows, one table of
numbers with their intervals, a verdict per method (verdicts.py reads the numbers), two plots."""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from rich.console import Console
from rich.progress import Progress

from ..common import DEVICE, resolve_device
from ..data.tokens import prepare_data
from ..errors import PosbenchError
from ..evaluation.extrapolate import EvalSettings, evaluate_run
from ..positions import METHODS, SEED_METHODS
from ..progress import make_progress
from ..runs.config import ModelConfig, TrainConfig
from ..runs.folder import loss_curve, read_config, read_json
from ..train import train
from .jobs import resolve_jobs, run_jobs
from .plots import plot_context_use, plot_loss_curves, plot_ppl_vs_length
from .presets import CorpusPreset, get_preset
from .results import csv_text, write_results
from .run_groups import group_runs
from .verdicts import Entry, add_comparisons, method_row
from .verdicts import verdict as verdict  # compare.verdict, as before verdicts.py


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
    device: str = DEVICE
    # a LayerNorm after the embedding for every method (True, runs labelled +ln) or none (False);
    # None: as each method's reference (only scaled-sinusoidal has one)
    embed_norm: bool | None = None
    # (kind, factor) pairs: each adds a row per rotary run, evaluated with rescaled frequencies
    rope_scaling: Sequence[tuple[str, float | None]] = ()
    # seeds per method: seed, seed+1, ... (init and data order; one tokenizer, so the same windows)
    seeds: int = 1
    eval_tokens: int | None = None  # predictions scored at every length (None: the preset's); more, narrower intervals
    precision: str | None = None  # CPU training precision (TrainConfig.precision; None: its default, fp32)
    jobs: int | None = None  # methods trained and evaluated side by side (jobs.py; None: resolve_jobs' default)

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise PosbenchError(f"--seeds must be at least 1, got {self.seeds}")

    def run_dir(self, label: str, seed: int) -> Path:
        """out/<label> with one seed (as before seeds existed); out/<label>/seed<k> with several."""
        return Path(self.out) / label if self.seeds == 1 else Path(self.out) / label / f"seed{seed}"


# (row label, method or None for given runs, [(seed, run folder)]): one seed per job when compare trains
# (a method's seeds side by side under --jobs), a row's folders together when they are given
Job = tuple[str, str | None, list[tuple[int | None, Path]]]


def compare(cfg: CompareConfig = CompareConfig(), runs: Sequence[str | Path] = (), console: Console | None = None,
            show_progress: bool = True) -> dict:
    """Train (or reuse / continue) each method's runs (CompareConfig.run_dir), or take existing
    `runs`; evaluate all at the same lengths on the same windows; write results.json, results.csv,
    ppl_vs_length.png and loss_curves.png. Rope scaling adds rows like rotary+yarn×4. A method that
    fails is recorded in results["failures"] with its reason, and the others go on."""
    preset = get_preset("compare", cfg.preset)
    side_by_side = resolve_jobs(cfg.jobs, cfg.device)
    # lengths: L, 2L, 4L, ... up to max_len, from each run's own training length
    settings = EvalSettings(max_len=cfg.max_len or preset.max_len, max_tokens=cfg.eval_tokens or preset.eval_tokens,
                            device=str(resolve_device(cfg.device)))
    started = time.perf_counter()
    configs = {m: _method_configs(cfg, preset, m) for m in cfg.methods}  # each method's, built once
    if not runs:
        _check_inputs(configs[cfg.methods[0]][1])
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    labels = {m: model_config.label() for m, (model_config, _) in configs.items()}  # as tables label them
    jobs: list[Job] = ([(label, None, [(None, d) for d in folders]) for label, folders in group_runs(runs)]
                       or [(labels[m], m, [(s, cfg.run_dir(labels[m], s))]) for m in cfg.methods for s in seeds])
    progress = make_progress(console, disable=not show_progress)
    outcomes: dict[int, dict[str, list[Entry]] | Exception] = {}

    def starting(k: int) -> None:
        label, _, seed_dirs = jobs[k]
        seed = f" seed {seed_dirs[0][0]}" if cfg.seeds > 1 and seed_dirs[0][0] is not None else ""
        progress.update(overall, description=f"[bold]compare[/] {label}{seed} ({k + 1}/{len(jobs)})")

    def finished(k: int, outcome: dict[str, list[Entry]] | Exception) -> None:
        outcomes[k] = outcome
        progress.advance(overall)

    with progress:
        overall = progress.add_task(f"[bold]compare[/] ({side_by_side} at a time)" if side_by_side > 1
                                    else "[bold]compare[/]", total=len(jobs))
        # each job trains, then evaluates as a job of its own (jobs.run_jobs: `then`)
        items = [(configs.get(method), seed_dirs, label) for label, method, seed_dirs in jobs]
        run_jobs(_train_job, items, side_by_side, finished, progress, starting,
                 then=functools.partial(_evaluate_job, cfg, settings))
    evaluated, failures = _in_job_order(jobs, outcomes)
    return _write_results(cfg, evaluated, failures, seeds if not runs else None, time.perf_counter() - started)


def _in_job_order(jobs: list[Job], outcomes: dict[int, dict[str, list[Entry]] | Exception]
                  ) -> tuple[dict[str, list[Entry]], list[dict]]:
    """The rows and failures in the order the methods were asked for, however the jobs finished. A
    row one of whose seeds failed is a failure (its first error), not a row of fewer seeds."""
    failed: dict[str, dict] = {}
    for k, (label, method, _) in enumerate(jobs):
        if isinstance(outcomes[k], Exception) and label not in failed:
            folders = [folder for row, _, seed_dirs in jobs if row == label for _, folder in seed_dirs]
            failed[label] = {"label": label, "pos": method, "run": str(folders[0].parent if len(folders) > 1
                             else folders[0]), "error": failure_reason(outcomes[k])}
    evaluated: dict[str, list[Entry]] = {}
    for k, (label, _, _) in enumerate(jobs):
        if label not in failed:
            for name, entries in outcomes[k].items():
                evaluated.setdefault(name, []).extend(entries)
    return evaluated, list(failed.values())


def _method_configs(cfg: CompareConfig, preset: CorpusPreset, method: str) -> tuple[ModelConfig, TrainConfig]:
    """One method's run at the first seed (the others differ only in their seed): every seed on the
    first seed's tokenizer, so all score the same windows."""
    model_config, train_config = preset.configs(
        method, dict(embed_norm=cfg.embed_norm), data=cfg.data, train_len=cfg.train_len, seed=cfg.seed,
        device=cfg.device, precision=cfg.precision, tokenizer_seed=cfg.seed if cfg.seeds > 1 else None)
    return model_config, train_config


def _check_inputs(train_config: TrainConfig) -> None:
    """Bad input every method shares (a missing corpus, --train-len 0) is one error and exit code 2
    before anything trains, not a failure per method. The tokenised corpus is cached for the runs."""
    t = train_config
    t.validate()
    prepare_data(t.data, t.tokenizer, t.vocab_size, t.tokenizer_seed_or_seed)


def failure_reason(e: BaseException) -> str:
    """One line: a PosbenchError's message; anything else prefixed with its type (e.g. OutOfMemoryError)."""
    lines = str(e).strip().splitlines()
    text = lines[0] if lines else ""
    return text if isinstance(e, PosbenchError) else f"{type(e).__name__}: {text}" if text else type(e).__name__


def _train_job(job: tuple, progress: Progress | None) -> tuple:
    """Train (or reuse / continue) each seed of a job, one method's: job = (configs: the method's,
    _method_configs, or None for given runs, which take their row's label (run_groups: `alibi (steps
    60)`); [(seed, run folder)]; the row's label). Returns (the job, [each seed's summary or None]), what
    _evaluate_job takes. progress: the display to add bars to (a --jobs worker's forwards them to the
    parent), None: quietly."""
    configs, seed_dirs, _ = job
    summaries = []
    for seed, run_dir in seed_dirs:
        if configs is not None:
            model_config, train_config = configs
            summaries.append(train(model_config, replace(train_config, seed=seed), out=run_dir, progress=progress,
                                   show_progress=progress is not None).summary)
        else:
            summaries.append(read_json(run_dir / "summary.json") if (run_dir / "summary.json").is_file() else None)
    return job, summaries


def _evaluate_job(cfg: CompareConfig, settings: EvalSettings, trained: tuple, progress: Progress | None
                  ) -> dict[str, list[Entry]]:
    """Evaluate each seed of a trained job (_train_job's result) -> label -> one entry per seed."""
    (configs, seed_dirs, row), summaries = trained
    out: dict[str, list[Entry]] = {}
    for (_, run_dir), summary in zip(seed_dirs, summaries, strict=True):
        for report, windows in _evaluate_run(run_dir, settings, cfg.rope_scaling, progress):
            if configs is None:  # the row's label in place of the method's, a rope scaling suffix kept
                report["label"] = row + report["label"].removeprefix(read_config(run_dir).label)
            out.setdefault(report["label"], []).append((report, windows, summary))
    return out


def _evaluate_run(run_dir: Path, settings: EvalSettings, rope_scaling: Sequence[tuple[str, float | None]],
                  progress) -> list[tuple[dict, dict]]:
    """The run's evaluation, and for a method RoPE scaling applies to, one more per scaling."""
    evaluations = [evaluate_run(run_dir, settings, progress)]
    if METHODS[evaluations[0][0]["pos"]].rope_scalable:  # the same run again, frequencies rescaled at evaluation
        for scaling in rope_scaling:
            evaluations.append(evaluate_run(run_dir, replace(settings, rope_scaling=scaling), progress))
    return evaluations


def _write_results(cfg: CompareConfig, evaluated: dict[str, list[Entry]], failures: list[dict],
                   seeds: list[int] | None, seconds: float) -> dict:
    """results.json (rows, failures, configs), results.csv and the two plots. `seeds` None: given
    runs, each with the seed its config names."""
    rows, windows = [], []
    for entries in evaluated.values():
        run_seeds = seeds or [read_config(Path(r["run"])).train.seed for r, _, _ in entries]
        row, w = method_row(entries, run_seeds)
        rows.append(row)
        windows.append(w)
    add_comparisons(rows, windows)
    results = {
        "preset": cfg.preset, "data": cfg.data, "seed": cfg.seed, "seeds": seeds or sorted(
            {s for row in rows for s in row["seeds"] if s is not None}), "embed_norm": cfg.embed_norm,
        "wall_seconds": seconds,
        "configs": {row["label"]: read_json(Path(row["run"]) / "config.json") for row in rows},
        "runs": rows, "failures": failures,
    }
    out = write_results(cfg.out, results, results_csv(rows, failures))
    plot_ppl_vs_length(rows, out / "ppl_vs_length.png")
    if any(row.get("context_use") for row in rows):
        plot_context_use(rows, out / "context_use.png")
    curves = {row["label"]: [loss_curve(Path(run)) for run in row.get("seed_runs", [row["run"]])]
              for row in rows if "rope_scaling" not in row}  # a rescaled row is a run already drawn
    plot_loss_curves(curves, out / "loss_curves.png")
    return results


CSV_COLUMNS = ["pos", "label", "run", "train_len", "length", "ppl", "bpb", "tokens", "params", "train_tokens_per_s",
               "verdict", "ppl_ci_low", "ppl_ci_high", "bpb_ci_low", "bpb_ci_high", "ppl_seeds", "best",
               "ratio_to_best", "ratio_to_best_low", "ratio_to_best_high", "error"]


def results_csv(rows: Sequence[dict], failures: Sequence[dict] = ()) -> str:
    """One line per (method, length); ppl_seeds joined by ';'; a failed method one line with its error."""
    lines = []
    for row in rows:
        for r in row["results"]:
            versus = r.get("vs_best") or {}
            lines.append([row["pos"], row["label"], row["run"], row["train_len"], r["length"], r["ppl"], r["bpb"],
                             r["tokens"], row["params"], row["train_tokens_per_s"], row["verdict"],
                             *(r.get("ppl_ci") or ["", ""]), *(r.get("bpb_ci") or ["", ""]),
                             ";".join("" if x is None else f"{x:.6g}" for x in r.get("ppl_seeds", [])),
                             versus.get("best", ""), versus.get("ratio", ""), *(versus.get("ci") or ["", ""]),
                             r.get("error", "")])
    lines += [[f["pos"] or "", f["label"], f["run"], *[""] * (len(CSV_COLUMNS) - 4), f["error"]] for f in failures]
    return csv_text(CSV_COLUMNS, lines)


