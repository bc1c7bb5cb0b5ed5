"""How far does each attention head look? Per-head statistics from the real attention probabilities.

The model attends through SDPA, which never materialises probabilities. `probe` runs the model's own
forward pass with its attention made explicit (GPT.watch_attention), one query chunk at a time, each
chunk of probabilities handed to a callback; `head_stats` folds the chunks into per-head metrics, so
the full (H, N, N) matrix never exists and memory stays linear in the length. What a method's own
parameters say (ALiBi's slopes, ...) comes from the method itself (PositionMethod.describe).

Read top to bottom: per-query metrics, Spearman, the probe, per-head statistics, the report (what
`posbench inspect-heads --json` writes). The plot is in plots.py.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from ..errors import PosbenchError
from ..model.attention import Visit
from ..model.gpt import GPT
from ..positions import relative_distance
from ..runs.folder import held_out_tokens, load_run, resolve_run
from .stats import percentile_interval, resample_indices, spearman

FRACTIONS = {"span50": 0.5, "span90": 0.9}  # attention mass a span must hold
MEANS = ("mean_distance", "entropy", "sink")  # averaged over queries; spans take the median

SAMPLES = 8  # windows inspect-heads probes by default (spread evenly over the held-out split)

# ----------------------------------------------------------------------------- per-query metrics


def query_metrics(p: torch.Tensor, start: int = 0) -> dict[str, torch.Tensor]:
    """Metrics of every query of an attention block. p: (B, H, q, k) probabilities of queries at
    positions start..start+q-1 over keys 0..k-1 (zero on future keys) -> (B, H, q) tensors:

    mean_distance  sum_j p_ij (i - j)
    span50/span90  smallest d such that keys i-d..i hold >= 50% / 90% of the mass (long)
    entropy        -sum_j p_ij log p_ij, nats
    sink           p_i0, the mass on the first token of the window"""
    q_len, k_len = p.shape[-2:]
    distance = relative_distance(q_len, k_len, start, p.device)  # (q, k) i - j, negative = future
    out = {"mean_distance": (p * distance.clamp(min=0)).sum(-1)}
    # within[..., j] = mass on keys j..i; it only grows as j moves back (sums of p >= 0, even in
    # floating point), so the keys holding >= f are 0..j* and the span is i - j*
    within = p.flip(-1).cumsum(-1).flip(-1)  # (B, H, q, k)
    query = distance[:, 0]  # (q,) = i
    for name, f in FRACTIONS.items():
        j_star = (within >= f - 1e-6).sum(-1) - 1  # tolerance: a uniform head's 0.9 sums to 0.8999999
        out[name] = (query - j_star).clamp(min=0)
    out["entropy"] = torch.special.entr(p).sum(-1)  # entr(0) = 0: masked keys add nothing
    out["sink"] = p[..., 0]
    return out


# ----------------------------------------------------------------------------- Spearman


# ----------------------------------------------------------------------------- the probe


@torch.no_grad()
def probe(model: GPT, idx: torch.Tensor, visit: Visit | None = None, layers: Sequence[int] | None = None
          ) -> torch.Tensor:
    """The model's own forward pass on idx (B, T) -> logits (B, T, V), its attention in the probed
    layers (default all) made explicit: for every chunk of queries start..start+c-1 it calls
    visit(layer, start, p), p: (B, H, c, start+c) probabilities (GPT.watch_attention)."""
    with model.watch_attention(visit or (lambda *_: None), layers):
        return model(idx)


# ----------------------------------------------------------------------------- per-head statistics


def head_stats(model: GPT, windows: torch.Tensor, layers: Sequence[int] | None = None, batch_size: int = 8
               ) -> dict[str, torch.Tensor]:
    """Per-head metrics over every query of every window. windows: (K, N) token ids -> (L', H)
    tensors, one row per probed layer (default all): mean_distance, entropy and sink are means over
    queries; span50 and span90 are medians over queries (the lower median, so a whole distance).
    Also span90_by_window: (L', K, H, N) every query's span90, what the window bootstrap resamples."""
    layers = list(range(model.config.n_layer)) if layers is None else list(layers)
    sums = {name: torch.zeros(len(layers), model.config.n_head, dtype=torch.float64) for name in MEANS}
    spans: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in layers] for name in FRACTIONS}
    chunks: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in layers] for name in FRACTIONS}  # one batch

    def visit(layer: int, start: int, p: torch.Tensor) -> None:
        row = layers.index(layer)
        metrics = query_metrics(p, start)  # (B, H, c) each
        for name in MEANS:
            sums[name][row] += metrics[name].sum((0, 2)).double()
        for name in FRACTIONS:  # one int per query and head is small next to the probabilities
            chunks[name][row].append(metrics[name].int())

    for b in range(0, len(windows), batch_size):
        probe(model, windows[b : b + batch_size], visit, layers)
        for name, rows in chunks.items():  # this batch's windows, every query: (B, H, N)
            for row, parts in enumerate(rows):
                spans[name][row].append(torch.cat(parts, dim=2))
                parts.clear()
    out = {name: total / windows.numel() for name, total in sums.items()}
    for name, rows in spans.items():
        per_window = torch.stack([torch.cat(batches) for batches in rows])  # (L', K, H, N)
        out[name] = per_window.transpose(1, 2).flatten(2).median(dim=2).values
        if name == "span90":
            out["span90_by_window"] = per_window
    return out


def spearman_interval(slopes: Sequence[float], spans: torch.Tensor) -> list[float] | None:
    """95% bootstrap interval of Spearman(slope, span90) over the probed windows: spans (K, H, N),
    every query's span90 in each window; each resample takes K whole windows and recomputes every
    head's median span. None with one window, or when no resample defines the correlation."""
    if len(spans) < 2:
        return None
    rhos = []
    for idx in resample_indices(len(spans)):
        median = spans[torch.from_numpy(idx)].transpose(0, 1).flatten(1).median(dim=1).values
        rho = spearman(slopes, median)
        if rho is not None:
            rhos.append(rho)
    return list(percentile_interval(np.array(rhos))) if rhos else None


def spread_windows(tokens: np.ndarray, split: str, length: int, samples: int) -> torch.Tensor:
    """(K, length) token ids: `samples` windows spread evenly over `tokens`, the held-out split (fewer
    when the split is too short for that many distinct windows)."""
    if length < 1 or samples < 1:
        raise PosbenchError(f"--length and --samples must be positive, got {length} and {samples}")
    if len(tokens) < length:
        raise PosbenchError(f"the {split} split has {len(tokens):,} tokens, fewer than one window of "
                            f"--length {length}; use a shorter --length")
    starts = np.unique(np.linspace(0, len(tokens) - length, samples).round().astype(np.int64))
    return torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int64))


# ----------------------------------------------------------------------------- the report


def spread(values: Sequence[float]) -> dict:
    return {"min": min(values), "median": statistics.median(values), "max": max(values)}


def summarize(heads: list[dict], params: dict) -> dict:
    """Per layer the spread of spans over heads and, with slopes, the Spearman correlation of the
    slope with span90 (and with the mean distance, which has no ties); the same spread over all."""
    layers = []
    for layer in sorted({h["layer"] for h in heads}):
        rows = [h for h in heads if h["layer"] == layer]
        entry = {"layer": layer, "span90": spread([h["span90"] for h in rows]),
                 "span50": spread([h["span50"] for h in rows])}
        if rows[0]["slope"] is not None:
            slopes = [h["slope"] for h in rows]
            entry["spearman_slope_span90"] = spearman(slopes, [h["span90"] for h in rows])
            entry["spearman_slope_mean_distance"] = spearman(slopes, [h["mean_distance"] for h in rows])
        layers.append(entry)
    return {"span90": spread([h["span90"] for h in heads]), "layers": layers, "params": params}


def build_report(run: str, model: GPT, stats: dict[str, torch.Tensor], layers: Sequence[int], length: int,
                 extra: dict | None = None) -> dict:
    """The JSON-able report: {"run", "pos", "length", "heads": [...], "summary": {...}}; `extra`
    (e.g. the split and the number of windows) goes into the summary."""
    params = model.pos.describe(length)
    slopes = params.get("slope")
    heads = [
        {"layer": layer, "head": h,
         "mean_distance": float(stats["mean_distance"][row, h]),
         "span50": int(stats["span50"][row, h]), "span90": int(stats["span90"][row, h]),
         "entropy": float(stats["entropy"][row, h]), "sink": float(stats["sink"][row, h]),
         "slope": slopes[h] if slopes is not None else None}
        for row, layer in enumerate(layers) for h in range(model.config.n_head)
    ]
    summary = summarize(heads, params) | (extra or {})
    if slopes is not None and "span90_by_window" in stats:  # the correlation's noise over windows
        for row, entry in enumerate(summary["layers"]):
            entry["spearman_slope_span90_ci"] = spearman_interval(slopes, stats["span90_by_window"][row])
    return {"run": run, "pos": model.config.pos, "length": length, "heads": heads, "summary": summary}


def inspect_heads(run: str | Path | None = None, length: int | None = None, samples: int = SAMPLES,
                  split: str = "valid", layer: int | None = None, batch_size: int = 8, data: str | None = None) -> dict:
    """Load a run (None: the newest under runs/), probe it on `samples` windows of `length` tokens
    (default: the training length) from its held-out split (of `data`, another corpus, when given),
    and return the report."""
    path = resolve_run(run)
    model, tokenizer, run_config = load_run(path)
    length = length or model.config.train_len
    n_layer = model.config.n_layer
    if layer is not None and not 0 <= layer < n_layer:
        raise PosbenchError(f"--layer {layer} is out of range: the model has layers 0..{n_layer - 1}")
    tokens, _ = held_out_tokens(path, run_config, tokenizer, split, data)
    windows = spread_windows(tokens, split, length, samples)
    if int(windows.max()) >= model.config.vocab_size:
        raise PosbenchError(f"the {split} split has token ids beyond the model's vocabulary; "
                            f"was the corpus of {path} changed since training?")
    layers = list(range(n_layer)) if layer is None else [layer]
    stats = head_stats(model, windows, layers, batch_size)
    return build_report(str(path), model, stats, layers, length, {"split": split, "samples": len(windows)})
