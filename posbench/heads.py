"""How far does each attention head look? Per-head statistics from the real attention probabilities.

The model attends through SDPA, which never materialises probabilities. `probe` reruns the forward
pass block by block with the model's own modules and an explicit softmax, one query chunk at a time,
and hands each chunk of probabilities to a callback; `head_stats` folds the chunks into per-head
metrics, so the full (H, N, N) matrix never exists and memory stays linear in the length.

Read top to bottom: per-query metrics, Spearman, the probe, per-head statistics, the method's own
parameters, the report (what `posbench inspect-heads --json` writes), the plot.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from .data import prepare_data
from .errors import PosbenchError
from .model import GPT, causal_mask
from .positions import PositionMethod, relative_distance, t5_relative_bucket
from .positions.alibi import AlibiPosition
from .positions.fire import FirePosition
from .positions.kerple import KerplePosition
from .positions.scaled_sinusoidal import ScaledSinusoidalPosition
from .positions.t5 import T5Position
from .runs import load_run, resolve_run

# Largest probability block (elements of (B, H, chunk, keys)) the probe holds at once; the metrics
# make a few temporaries of the same size, so this bounds memory at a few times 16 MiB.
PROBE_BUDGET = 1 << 22
FRACTIONS = {"span50": 0.5, "span90": 0.9}  # attention mass a span must hold
MEANS = ("mean_distance", "entropy", "sink")  # averaged over queries; spans take the median
T5_DISTANCES = (0, 16, 128)  # where the T5 bias profile is read off
HELD_OUT = ("valid", "test")

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


def rank(x: Sequence[float] | torch.Tensor) -> torch.Tensor:
    """Ranks 1..n; tied values share their average rank (as scipy.stats.rankdata)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    _, inverse, counts = torch.unique(x, return_inverse=True, return_counts=True)  # sorted values
    counts = counts.double()
    first = counts.cumsum(0) - counts  # ranks taken by the smaller values
    return (first + (counts + 1) / 2)[inverse]


def spearman(x: Sequence[float] | torch.Tensor, y: Sequence[float] | torch.Tensor) -> float | None:
    """Spearman's rank correlation: Pearson's r of the ranks. None when undefined (n < 2, or one
    side constant, e.g. every head with the same span)."""
    rx, ry = rank(x), rank(y)
    if rx.numel() != ry.numel():
        raise ValueError(f"spearman needs equal lengths, got {rx.numel()} and {ry.numel()}")
    rx, ry = rx - rx.mean(), ry - ry.mean()
    denominator = (rx.square().sum() * ry.square().sum()).sqrt()
    if rx.numel() < 2 or denominator == 0:
        return None
    return float((rx * ry).sum() / denominator)


# ----------------------------------------------------------------------------- the probe

Visit = Callable[[int, int, torch.Tensor], None]


@torch.no_grad()
def probe(model: GPT, idx: torch.Tensor, visit: Visit | None = None, layers: Sequence[int] | None = None
          ) -> torch.Tensor:
    """The model's forward pass on idx (B, T) -> logits (B, T, V), with an explicit softmax in the
    probed layers (default all): for every chunk of queries start..start+c-1 it calls
    visit(layer, start, p), p: (B, H, c, start+c) probabilities (keys past the chunk are all in its
    future, so they are left out). The rest of each block is the model's own modules, so every
    layer sees exactly the input it sees in the model."""
    pos = model.pos
    x = model.embed(idx, 0)  # (B, T, D)
    for layer, block in enumerate(model.blocks):
        if layers is not None and layer not in layers:
            x = block(x, pos, 0, None)  # not probed: the model's own SDPA path
            continue
        attn = block.attn
        B, T, D = x.shape
        q, k, v = attn.qkv(block.ln_1(x)).view(B, T, 3, attn.n_head, D // attn.n_head).permute(2, 0, 3, 1, 4)
        q, k = pos.rotate(q, k, 0)  # (B, nh, T, hs) each
        y = torch.empty_like(q)  # (B, nh, T, hs)
        chunk = max(1, PROBE_BUDGET // (B * attn.n_head * T))
        for s in range(0, T, chunk):
            e = min(T, s + chunk)
            scores = q[:, :, s:e] @ k[:, :, :e].transpose(-2, -1) / math.sqrt(q.size(-1))  # (B, nh, c, e)
            p = torch.softmax(scores + causal_mask(pos, e - s, e, s, q.device, q.dtype), dim=-1)
            if visit is not None:
                visit(layer, s, p)
            y[:, :, s:e] = p @ v[:, :, :e]
        x = x + attn.dropout(attn.proj(y.transpose(1, 2).reshape(B, T, D)))
        x = x + block.mlp(block.ln_2(x))
    head = model.wte.weight if model.lm_head is None else model.lm_head.weight
    return F.linear(model.ln_f(x), head)


# ----------------------------------------------------------------------------- per-head statistics


def head_stats(model: GPT, windows: torch.Tensor, layers: Sequence[int] | None = None, batch_size: int = 8
               ) -> dict[str, torch.Tensor]:
    """Per-head metrics over every query of every window. windows: (K, N) token ids -> (L', H)
    tensors, one row per probed layer (default all): mean_distance, entropy and sink are means over
    queries; span50 and span90 are medians over queries (the lower median, so a whole distance)."""
    layers = list(range(model.config.n_layer)) if layers is None else list(layers)
    H = model.config.n_head
    sums = {name: torch.zeros(len(layers), H, dtype=torch.float64) for name in MEANS}
    spans: dict[str, list[list[torch.Tensor]]] = {name: [[] for _ in layers] for name in FRACTIONS}

    def visit(layer: int, start: int, p: torch.Tensor) -> None:
        row = layers.index(layer)
        metrics = query_metrics(p, start)  # (B, H, c) each
        for name in MEANS:
            sums[name][row] += metrics[name].sum((0, 2)).double()
        for name in FRACTIONS:  # one int per query and head is small next to the probabilities
            spans[name][row].append(metrics[name].transpose(0, 1).reshape(H, -1).int())

    for b in range(0, len(windows), batch_size):
        probe(model, windows[b : b + batch_size], visit, layers)
    out = {name: total / windows.numel() for name, total in sums.items()}
    for name, rows in spans.items():
        out[name] = torch.stack([torch.cat(chunks, dim=1).median(dim=1).values for chunks in rows])
    return out


def held_out_windows(config: dict, split: str, length: int, samples: int) -> torch.Tensor:
    """(K, length) token ids: `samples` windows spread evenly over the run's held-out split (fewer
    when the split is too short for that many distinct windows)."""
    if split not in HELD_OUT:
        raise PosbenchError(f"--split must be one of {', '.join(HELD_OUT)}, got '{split}'")
    if length < 1 or samples < 1:
        raise PosbenchError(f"--length and --samples must be positive, got {length} and {samples}")
    cfg = config["train"]
    tokens = prepare_data(cfg["data"], cfg["tokenizer"], cfg["vocab_size"], cfg["seed"]).splits[split]
    if len(tokens) < length:
        raise PosbenchError(f"the {split} split has {len(tokens):,} tokens, fewer than one window of "
                            f"--length {length}; use a shorter --length")
    starts = np.unique(np.linspace(0, len(tokens) - length, samples).round().astype(np.int64))
    return torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(length)], dtype=np.int64))


# ----------------------------------------------------------------------------- the method's own parameters


def method_params(pos: PositionMethod, length: int) -> dict:
    """JSON-able parameters of the position method that shape attention: ALiBi's slope per head,
    T5's learned bias per head (at a few distances, and the distance < length it favours most),
    scaled-sinusoidal's scale, KERPLE's r1 and r2 per head, FIRE's c and threshold L; {} for the others."""
    if isinstance(pos, AlibiPosition):
        return {"slope": pos.slopes.tolist()}
    if isinstance(pos, T5Position):
        distance = torch.arange(max(length, *T5_DISTANCES) + 1, device=pos.bias.weight.device)
        buckets = t5_relative_bucket(-distance, False, pos.num_buckets, pos.max_distance)
        bias = pos.bias(buckets).detach().cpu()  # (distances, H)
        return {"t5_bias": [
            {"head": h, **{f"bias_d{d}": float(bias[d, h]) for d in T5_DISTANCES},
             "peak_distance": int(bias[:length, h].argmax())}  # argmax: the nearest of equal peaks
            for h in range(pos.n_head)]}
    if isinstance(pos, ScaledSinusoidalPosition):
        return {"scale": pos.scale.item()}
    if isinstance(pos, KerplePosition):  # bias -r1 log(1 + r2 d): r1 its depth, r2 how soon it bends
        return {"kerple": [{"head": h, "r1": r1, "r2": r2}
                           for h, (r1, r2) in enumerate(zip(pos.r1.tolist(), pos.r2.tolist(), strict=True))]}
    if isinstance(pos, FirePosition):
        return {"fire": {"c": pos.c.item(), "L": pos.threshold.item()}}
    return {}


def param_labels(params: dict, n_head: int) -> tuple[str, list[str]]:
    """(column title, one label per head) for the table's parameter column."""
    if "slope" in params:
        return "slope", [f"{m:.4g}" for m in params["slope"]]
    if "t5_bias" in params:
        title = "bias " + "/".join(map(str, T5_DISTANCES)) + " @peak"
        return title, ["/".join(f"{b[f'bias_d{d}']:+.1f}" for d in T5_DISTANCES) + f" @{b['peak_distance']}"
                       for b in params["t5_bias"]]
    if "scale" in params:
        return "scale", [f"{params['scale']:.4g}"] * n_head
    if "kerple" in params:
        return "r1 / r2", [f"{k['r1']:.3g} / {k['r2']:.3g}" for k in params["kerple"]]
    if "fire" in params:
        return "c / L", [f"{params['fire']['c']:.3g} / {params['fire']['L']:.4g}"] * n_head
    return "param", ["–"] * n_head


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
    params = method_params(model.pos, length)
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
    return {"run": run, "pos": model.config.pos, "length": length, "heads": heads, "summary": summary}


def inspect_heads(run: str | Path | None = None, length: int | None = None, samples: int = 8,
                  split: str = "valid", layer: int | None = None, batch_size: int = 8) -> dict:
    """Load a run (None: the newest under runs/), probe it on `samples` windows of `length` tokens
    (default: the training length) from its held-out split, and return the report."""
    path = resolve_run(run)
    model, _, config = load_run(path)
    length = length or config["train"]["seq_len"]
    n_layer = model.config.n_layer
    if layer is not None and not 0 <= layer < n_layer:
        raise PosbenchError(f"--layer {layer} is out of range: the model has layers 0..{n_layer - 1}")
    windows = held_out_windows(config, split, length, samples)
    if int(windows.max()) >= model.config.vocab_size:
        raise PosbenchError(f"the {split} split has token ids beyond the model's vocabulary; "
                            f"was the corpus of {path} changed since training?")
    layers = list(range(n_layer)) if layer is None else [layer]
    stats = head_stats(model, windows, layers, batch_size)
    return build_report(str(path), model, stats, layers, length, {"split": split, "samples": len(windows)})


# ----------------------------------------------------------------------------- the plot


def plot_report(report: dict, path: str | Path) -> None:
    """PNG: a layer x head heatmap of span90 (log colour scale), and for ALiBi span90 against the
    slope per layer (log-log). Spans of 0 (a head on its own token) are drawn at 0.5."""
    from matplotlib.colors import LogNorm
    from matplotlib.figure import Figure  # no pyplot: no global backend state; Figure saves via Agg

    heads = report["heads"]
    layers = sorted({h["layer"] for h in heads})
    n_head = max(h["head"] for h in heads) + 1
    span = np.full((len(layers), n_head), np.nan)
    for h in heads:
        span[layers.index(h["layer"]), h["head"]] = h["span90"]
    shown = np.maximum(span, 0.5)  # log scale: 0 cannot be drawn
    alibi = heads[0]["slope"] is not None
    fig = Figure(figsize=(6 + 0.35 * n_head + 5 * alibi, 1.2 + 0.55 * len(layers) + 2 * alibi), layout="constrained")
    axes = fig.subplots(1, 1 + alibi, squeeze=False)[0]

    ax = axes[0]
    # a fixed range, 0 (drawn at 0.5) .. the window length, so plots of different runs compare
    norm = LogNorm(vmin=0.5, vmax=max(report["length"], np.nanmax(shown)))
    image = ax.imshow(shown, norm=norm, cmap="viridis", aspect="auto")
    if span.size <= 256:  # the number itself, where there is room
        for (r, c), value in np.ndenumerate(span):
            color = "white" if norm(shown[r, c]) < 0.6 else "black"
            ax.text(c, r, f"{value:.0f}", ha="center", va="center", fontsize=8, color=color)
    ax.set_xticks(range(n_head))
    ax.set_yticks(range(len(layers)), [str(layer) for layer in layers])
    ax.set_xlabel("head")
    ax.set_ylabel("layer")
    ax.set_title(f"{report['pos']}: 90% attention span (tokens), length {report['length']}")
    fig.colorbar(image, ax=ax, label="span90 (tokens, log scale)")

    if alibi:
        ax = axes[1]
        rhos = {e["layer"]: e.get("spearman_slope_span90") for e in report["summary"]["layers"]}
        for layer in layers:
            rows = sorted((h for h in heads if h["layer"] == layer), key=lambda h: h["slope"])
            rho = rhos.get(layer)
            label = f"layer {layer}" + (f" (ρ = {rho:+.2f})" if rho is not None else "")
            ax.plot([h["slope"] for h in rows], [max(h["span90"], 0.5) for h in rows], "o-", label=label)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("ALiBi slope m")
        ax.set_ylabel("span90 (tokens)")
        ax.set_title("span against slope (Spearman ρ per layer)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
