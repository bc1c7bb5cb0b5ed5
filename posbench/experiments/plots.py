"""The PNGs posbench writes: perplexity against length, context use and loss curves (compare) and the
per-head span heatmap (inspect-heads). Matplotlib's object API only (no pyplot): no global backend
state, Figure saves via Agg."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.ticker import FuncFormatter

from ..fileio import atomic_write


def _draw_with_band(ax, row: dict, points: list[tuple[int, float, list[float] | None]], color=None):
    """One method's line, its 95% interval as a shaded band (an error bar where it has one point)."""
    (line,) = ax.plot([n for n, _, _ in points], [y for _, y, _ in points], marker="o", label=row["label"],
                      color=color)
    band = [(n, *ci) for n, _, ci in points if ci]
    if len(band) > 1:
        ax.fill_between(*zip(*band, strict=True), color=line.get_color(), alpha=0.2, linewidth=0)
    elif band:  # one length (e.g. learned, n/a past L)
        n, low, high = band[0]
        y = next(y for m, y, _ in points if m == n)
        ax.errorbar([n], [y], yerr=[[y - low], [high - y]], color=line.get_color(), capsize=3)
    return line.get_color()


def plot_ppl_vs_length(rows: Sequence[dict], path: Path) -> None:
    """Two panels, log-log: each method's perplexity relative to its own at the training length with
    the paired 95% band (does it grow? the question the verdicts answer, and the tight interval), and
    the absolute perplexity with its band beside it; a line at the training length."""
    fig = Figure(figsize=(13, 4.6), dpi=120)
    relative, absolute = fig.subplots(1, 2)
    for row in rows:
        mine = [r for r in row["results"] if r["ppl"] is not None and r["mode"] == "nonoverlapping"]
        if not mine:
            continue
        color = _draw_with_band(absolute, row, [(r["length"], r["ppl"], r.get("ppl_ci")) for r in mine])
        ratios = [(r["length"], r["vs_L"]["ratio"], r["vs_L"]["ci"]) for r in mine if r.get("vs_L")]
        if ratios:
            _draw_with_band(relative, row, ratios, color)
    relative.axhline(1.0, color="black", linewidth=0.8)
    for ax, ylabel, title in ((relative, "perplexity / perplexity at L", "relative to its own at L (paired)"),
                              (absolute, "perplexity", "absolute")):
        for L in sorted({row["train_len"] for row in rows}):
            ax.axvline(L, color="grey", linestyle="--", linewidth=1)
            ax.text(L, 1.0, f" L={L}", transform=ax.get_xaxis_transform(), va="top", fontsize=8, color="grey")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        plain = FuncFormatter(lambda y, _: f"{y:g}")  # 1.5, 60: not 1.5x10^0
        ax.yaxis.set_major_formatter(plain)
        ax.yaxis.set_minor_formatter(plain)
        ax.xaxis.set_major_formatter(plain)
        ax.set_xlabel("evaluation length (tokens)")
        ax.set_ylabel(ylabel)
        ax.set_title(f"Train short, test long: {title}", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    if absolute.get_legend_handles_labels()[0]:  # every method failed: an empty plot, no legend
        absolute.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))  # outside: never over a line
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_context_use(rows: Sequence[dict], path: Path) -> None:
    """The loss of the same targets against the context given (context_use.py), one line per method
    with its 95% band: a line that keeps falling past L uses the longer context."""
    fig = Figure(figsize=(8, 4.6), dpi=120)
    ax = fig.subplots()
    for row in rows:
        points = [(r["length"], r["ppl"], r.get("ppl_ci")) for r in row.get("context_use", []) if r["ppl"] is not None]
        if points:
            _draw_with_band(ax, row, points)
    for L in sorted({row["train_len"] for row in rows}):
        ax.axvline(L, color="grey", linestyle="--", linewidth=1)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))
    ax.set_xlabel("context given (tokens)")
    ax.set_ylabel("perplexity of the same targets")
    ax.set_title("Context use: does more context lower the loss?", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def _mean_and_band(curves: Sequence[list[tuple[int, float]]]) -> tuple[list, list, list, list]:
    """Points every seed logged: (tokens, mean, min, max) over seeds."""
    common = sorted(set.intersection(*(set(dict(c)) for c in curves))) if curves else []
    values = np.array([[dict(c)[t] for t in common] for c in curves]).reshape(len(curves), len(common))
    return common, list(values.mean(0)), list(values.min(0)), list(values.max(0))


def plot_loss_curves(runs: dict[str, Sequence[dict]], path: Path) -> None:
    """Training and validation loss against tokens seen, one line per method (the mean over its
    seeds, their range as a band): did every run converge? `runs`: label -> runs.loss_curve per seed."""
    fig = Figure(figsize=(11, 4.2), dpi=120)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, name in zip(axes, ("train", "val"), strict=True):
        for label, seeds in runs.items():
            tokens, mean, low, high = _mean_and_band([s[name] for s in seeds if s[name]])
            if not tokens:
                continue
            (line,) = ax.plot(tokens, mean, label=label, linewidth=1.2, marker="o" if name == "val" else None)
            if len(seeds) > 1:
                ax.fill_between(tokens, low, high, color=line.get_color(), alpha=0.2, linewidth=0)
        ax.set_xlabel("tokens seen")
        ax.set_title(f"{'training' if name == 'train' else 'validation'} loss")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("loss (nats per token)")
    if any(ax.get_legend_handles_labels()[0] for ax in axes):
        axes[1].legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_heads(report: dict, path: str | Path) -> None:
    """PNG: a layer x head heatmap of span90 (log colour scale), and for ALiBi span90 against the
    slope per layer (log-log). Spans of 0 (a head on its own token) are drawn at 0.5."""
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
            ci = next((e.get("spearman_slope_span90_ci") for e in report["summary"]["layers"]
                       if e["layer"] == layer), None)
            label = f"layer {layer}" + (f" (ρ = {rho:+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else "") + ")"
                                        if rho is not None else "")
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
