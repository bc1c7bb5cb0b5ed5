"""`posbench compare hf:MODEL ... [RUN ...]`: pretrained models (and runs) side by side, in one table with
paired intervals and verdicts, when they can be paired — scored on the same text in the same tokens —
or refused before anything is evaluated, as run_groups.py refuses runs on other corpora or tokenizers.

Every row is evaluated at the same lengths (the union of each row's defaults: a pretrained model's
trained context × 1/2 … 8, a run's L … max-len), so every row scores the same blocks; the rows, ratios
and verdicts are verdicts.py's, results.json and results.csv those of compare.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
from rich.console import Console

from ..common import resolve_device
from ..data.corpora import load_corpus
from ..data.tokenizer import Tokenizer
from ..errors import PosbenchError
from ..evaluation.extrapolate import EvalSettings
from ..evaluation.scoring import check_lengths
from ..evaluation.scoring import default_lengths as run_lengths
from ..experiments.compare import CompareConfig, failure_reason, results_csv
from ..experiments.plots import plot_context_use, plot_ppl_vs_length
from ..experiments.presets import get_preset
from ..experiments.results import write_results
from ..experiments.verdicts import add_comparisons, method_row
from ..progress import make_progress
from ..runs.folder import check_run_dir, held_out_tokens, read_config, read_json, resolve_run
from . import is_pretrained
from .architectures import has_rope, trained_context
from .evaluate import default_lengths, evaluate_any, run_tokenizer_id, tokenizer_id
from .hub import display_name, load_config, load_tokenizer
from .tokens import encode


def _units(spec: str, data: str, split: str) -> tuple[str, str, str]:
    """(what it is called, its tokenizer, a digest of the held-out split in its tokens)."""
    if is_pretrained(spec):
        tokenizer = load_tokenizer(spec)
        tokens = encode(tokenizer, load_corpus(data).splits[split])  # as evaluate_model reads it
        name, tokenizer_name = display_name(spec), tokenizer_id(tokenizer)
    else:
        run_dir = resolve_run(spec)
        config = check_run_dir(run_dir)
        tokens, _ = held_out_tokens(run_dir, config, Tokenizer.load(run_dir), split, data)  # as compare scores it
        name, tokenizer_name = str(run_dir), run_tokenizer_id(run_dir)
    return name, tokenizer_name, hashlib.sha256(np.asarray(tokens, dtype=np.int64).tobytes()).hexdigest()


def check_pairable(specs: Sequence[str], data: str, split: str) -> None:
    """One line naming what differs unless every model and run scores the same tokens of the same text."""
    units = [_units(spec, data, split) for spec in specs]
    (first, first_tokenizer, first_tokens), *rest = units
    for name, tokenizer, tokens in rest:
        if tokens != first_tokens:
            what = (f"their tokenizer differs ({first_tokenizer} vs {tokenizer})" if tokenizer != first_tokenizer
                    else "their held-out text differs (another corpus)")
            raise PosbenchError(f"cannot compare {first} with {name}: {what}, so they are not scored on the same "
                                f"text in the same units; `posbench eval-extrapolate {first} {name}` puts them side "
                                "by side in bits per byte")


def shared_lengths(specs: Sequence[str], max_len: int | None, run_max_len: int) -> list[int]:
    """Every row's default lengths together: one longest length, so every row scores the same blocks."""
    lengths: list[int] = []
    for spec in specs:
        if is_pretrained(spec):
            lengths += default_lengths(trained_context(load_config(spec)), max_len)
        else:
            lengths += run_lengths(read_config(resolve_run(spec)).model.train_len, max_len or run_max_len)
    return check_lengths(lengths)


def _jobs(specs: Sequence[str], rope_scaling: Sequence[tuple[str, float | None]]) -> list[tuple[str, tuple | None]]:
    """(spec, rope scaling or None): every model and run, and each rope scaling of a model with RoPE."""
    jobs = [(spec, None) for spec in specs]
    for spec in specs:
        if is_pretrained(spec) and has_rope(load_config(spec)):
            jobs += [(spec, scaling) for scaling in rope_scaling]
    return jobs


def compare_models(cfg: CompareConfig, specs: Sequence[str | Path], console: Console | None = None,
                   show_progress: bool = True) -> dict:
    """Evaluate every hf: model and run on cfg.data (each in its own tokens) at shared lengths, refuse
    what cannot be paired, write results.json, results.csv, ppl_vs_length.png (and context_use.png).
    cfg.precision is the models' weights' precision; a row that fails is a failure, the others go on."""
    started = time.perf_counter()
    specs = [str(s) for s in specs]
    if len(set(specs)) != len(specs):
        raise PosbenchError("a model or run is named twice")
    preset = get_preset("compare", cfg.preset)
    check_pairable(specs, cfg.data, "valid")
    settings = EvalSettings(lengths=shared_lengths(specs, cfg.max_len, preset.max_len), data=cfg.data,
                            max_tokens=cfg.eval_tokens or preset.eval_tokens, device=str(resolve_device(cfg.device)))
    rows, windows, failures = [], [], []
    progress = make_progress(console, disable=not show_progress)
    with progress:
        for spec, scaling in _jobs(specs, cfg.rope_scaling):
            try:
                report, w = evaluate_any(spec, replace(settings, rope_scaling=scaling), progress, cfg.precision)
            except Exception as e:  # noqa: BLE001 (one row's failure, reported; the others go on)
                failures.append({"label": display_name(spec) if is_pretrained(spec) else spec, "pos": None,
                                 "run": spec, "error": failure_reason(e)})
                continue
            row, row_windows = method_row([(report, w, _summary(report))], [None])
            rows.append(row)
            windows.append(row_windows)
    add_comparisons(rows, windows)
    return _write(cfg, rows, failures, time.perf_counter() - started)


def _summary(report: dict) -> dict | None:
    """What a table shows beside the numbers: a model's parameter count, a run's summary.json."""
    if "model" in report:
        return {"params": report["model"]["params"]}
    path = Path(report["run"]) / "summary.json"
    return read_json(path) if path.is_file() else None


def _write(cfg: CompareConfig, rows: list[dict], failures: list[dict], seconds: float) -> dict:
    plots = ["ppl_vs_length.png"] + (["context_use.png"] if any(row.get("context_use") for row in rows) else [])
    results = {"preset": cfg.preset, "data": cfg.data, "seeds": [], "wall_seconds": seconds,
               "models": {row["label"]: row["model"] for row in rows if "model" in row},
               "runs": rows, "failures": failures, "plots": plots}
    out = write_results(cfg.out, results, results_csv(rows, failures))
    plot_ppl_vs_length(rows, out / "ppl_vs_length.png")
    if "context_use.png" in plots:
        plot_context_use(rows, out / "context_use.png")
    return results
