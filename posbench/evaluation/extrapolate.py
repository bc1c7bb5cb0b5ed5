"""`posbench eval-extrapolate` as a library: evaluate runs at a range of lengths (scoring.py does the
scoring) and report each as the JSON entry the CLI prints and writes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from ..common import check_split
from ..errors import PosbenchError
from ..experiments.verdicts import add_context_comparisons
from ..positions.rope_scaling import apply_rope_scaling
from ..progress import make_progress
from ..runs.folder import held_out_tokens, load_run, resolve_run
from .context_use import context_use
from .scoring import (
    BATCH_TOKENS,
    MAX_TOKENS,
    MODES,
    LengthResult,
    check_lengths,
    default_lengths,
    evaluate_lengths,
    position_loss,
)
from .stats import Windows, bpb_interval, ppl_interval


@dataclass(frozen=True)
class EvalSettings:
    """How every run of a report is evaluated (the options of `posbench eval-extrapolate`)."""

    lengths: Sequence[int] | None = None  # None: L, 2L, 4L, ... up to max_len, from each run's own L
    max_len: int = 4096
    split: str = "valid"
    mode: str = "nonoverlapping"  # or "sliding", or "both"
    stride: int | None = None  # sliding windows' step (default: half the length)
    max_tokens: int = MAX_TOKENS  # predictions scored at every length
    data: str | None = None  # another corpus, tokenised with each run's tokenizer
    device: str = "cpu"
    # (kind, factor): evaluate rotary models with rescaled frequencies (linear / ntk / yarn), no
    # retraining; factor None reaches the longest length
    rope_scaling: tuple[str, float | None] | None = None
    # the context-use diagnostic (context_use.py) at every length >= L, beside the sweep
    context_use: bool = True

    def __post_init__(self) -> None:
        if self.mode not in (*MODES, "both"):
            raise PosbenchError(f"--mode must be nonoverlapping, sliding or both, got '{self.mode}'")
        check_split(self.split)
        if self.lengths:
            object.__setattr__(self, "lengths", check_lengths(self.lengths))


def result_row(r: LengthResult) -> dict:
    """One (mode, length) of a report: ppl and bpb with their 95% intervals over the scored blocks
    (stats.py; None with a single block), or the error that left it without numbers."""
    row = {"length": r.length, "mode": r.mode, "ppl": r.ppl, "bpb": r.bpb, "tokens": r.tokens}
    if r.error:
        return row | {"ppl_ci": None, "bpb_ci": None, "error": r.error}
    ppl, bpb = ppl_interval(r.windows), bpb_interval(r.windows)
    return row | {"ppl_ci": ppl and ppl.as_list(), "bpb_ci": bpb and bpb.as_list(), "blocks": r.windows.n_blocks}


def run_report(run: str | Path | None, settings: EvalSettings = EvalSettings(),
               progress: Progress | None = None) -> dict:
    """One run's entry of the --json layout: run, pos, label, train_len, results, position_loss (and
    split, data, and notes when something about the evaluation text needs saying). With rope_scaling
    the entry is labelled e.g. `rotary+yarn×4`."""
    return evaluate_run(run, settings, progress)[0]


def evaluate_run(run: str | Path | None, settings: EvalSettings = EvalSettings(),
                 progress: Progress | None = None) -> tuple[dict, dict[tuple[str, int], Windows]]:
    """run_report's entry, and the per-window losses behind it by (mode, length) (for paired
    comparisons between runs evaluated on the same windows)."""
    run_dir = resolve_run(run)
    model, tokenizer, run_config = load_run(run_dir, device=settings.device)
    if tokenizer.vocab_size != model.config.vocab_size:
        raise PosbenchError(f"{run_dir}: the tokenizer has {tokenizer.vocab_size} tokens but the model "
                            f"{model.config.vocab_size}; the run folder is inconsistent")
    train_len = model.config.train_len
    lengths = settings.lengths or default_lengths(train_len, settings.max_len)
    label = run_config.label
    scaling = None
    if settings.rope_scaling is not None:
        kind, factor = settings.rope_scaling
        factor = max(lengths) / train_len if factor is None else factor  # default: reach the longest length
        apply_rope_scaling(model, kind, factor, train_len)
        scaling = {"kind": kind, "factor": factor}
        label = f"{label}+{kind}×{factor:g}"
    tokens, notes = held_out_tokens(run_dir, run_config, tokenizer, settings.split, settings.data)
    random_positions = run_config.train.random_positions  # scored as trained (scoring.py)
    scores, windows = score_model(model, tokens, tokenizer.token_bytes, lengths, train_len, settings, progress, label,
                                  random_positions=random_positions)
    report = {
        "run": str(run_dir), "pos": model.config.pos, "label": label, "train_len": train_len,
        "split": settings.split, "data": settings.data or run_config.train.data, **scores,
        **({"notes": notes} if notes else {}),
        **({"rope_scaling": scaling} if scaling else {}),
        **({"random_positions": random_positions} if random_positions is not None else {}),
    }
    add_context_comparisons(report, {key: [w] for key, w in windows.items()})
    return report, windows


def score_model(model: torch.nn.Module, tokens: np.ndarray, token_bytes: np.ndarray, lengths: Sequence[int],
                train_len: int, settings: EvalSettings, progress: Progress | None, label: str,
                random_positions: int | None = None, batch_tokens: int = BATCH_TOKENS
                ) -> tuple[dict, dict[tuple[str, int], Windows]]:
    """A report entry's scores — "results" by length, "context_use" (settings.context_use, every length
    >= train_len) and "position_loss" — and the windows behind them by (mode, length), for a posbench
    run and a pretrained model alike."""
    results = evaluate_lengths(model, tokens, token_bytes, lengths, settings.mode, settings.stride,
                               settings.max_tokens, batch_tokens, progress=progress, label=label,
                               random_positions=random_positions)
    contexts = [n for n in lengths if n >= train_len]
    context = []
    if settings.context_use and len(contexts) > 1:
        context = context_use(model, tokens, token_bytes, contexts, train_len, settings.max_tokens, progress, label,
                              random_positions)
    curves = [r for r in results if r.position_losses is not None]  # the longest length that ran
    scores = {"results": [result_row(r) for r in results], "context_use": [result_row(r) for r in context],
              "position_loss": position_loss(curves[-1].position_losses, train_len) if curves else []}
    return scores, {(r.mode, r.length): r.windows for r in [*results, *context] if r.windows is not None}


def extrapolation_report(runs: Sequence[str | Path | None] = (None,), settings: EvalSettings = EvalSettings(),
                         console: Console | None = None, show_progress: bool = True) -> dict:
    """Perplexity by length for each run: {"runs": [run_report(...), ...]} (the --json layout).
    No runs (or None) means the newest run under runs/."""
    progress = make_progress(console, disable=not show_progress)
    with progress:
        reports = [run_report(run, settings, progress) for run in (list(runs) or [None])]
    return {"runs": reports}
