"""The PNGs of `posbench tasks`: exact-match accuracy against length (one panel per task) and the
passkey heatmap (length x depth of the key, one panel per method; Mohtashami & Jaggi 2023). Matplotlib's
object API only, as plots.py."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from ..fileio import atomic_write


def _mean_by(rows: Sequence[dict], key: str, *fields: str) -> dict:
    """{(label, *field values): mean accuracy over the seeds} of the rows' `key` entries."""
    sums: dict = {}
    for row in rows:
        for r in row.get(key, []):
            if r["accuracy"] is not None:
                k = (row["label"], *(r[f] for f in fields))
                total, n = sums.get(k, (0.0, 0))
                sums[k] = (total + r["accuracy"], n + 1)
    return {k: total / n for k, (total, n) in sums.items()}


def plot_accuracy_vs_length(rows: Sequence[dict], path: Path) -> None:
    """Exact match against instance length, one panel per task, one line per method (mean over
    seeds), a dashed line at the training maximum."""
    tasks = list(dict.fromkeys(row["task"] for row in rows))
    fig = Figure(figsize=(3.6 * len(tasks) + 1.6, 3.4), dpi=100)
    axes = fig.subplots(1, len(tasks), squeeze=False)[0]
    for ax, task in zip(axes, tasks, strict=True):
        mine = [row for row in rows if row["task"] == task]
        means = _mean_by(mine, "results", "length")
        for label in dict.fromkeys(row["label"] for row in mine):
            points = sorted((n, acc) for (lab, n), acc in means.items() if lab == label)
            if points:
                ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=label)
        ax.axvline(mine[0]["train_max_len"], color="grey", linestyle="--", linewidth=1)
        ax.set_ylim(-0.03, 1.03)
        ax.set_title(task)
        ax.set_xlabel("instance length (tokens)")
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("exact-match accuracy")
    axes[-1].legend(fontsize=7, loc="center left", bbox_to_anchor=(1.02, 0.5))
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))


def plot_passkey_heatmap(rows: Sequence[dict], path: Path) -> None:
    """Passkey exact match by total length (columns) and depth of the key (rows), a panel per method."""
    means = _mean_by(rows, "depths", "length", "depth")
    labels = list(dict.fromkeys(row["label"] for row in rows))
    lengths = sorted({r["length"] for row in rows for r in row["depths"]})
    depths = sorted({r["depth"] for row in rows for r in row["depths"]})
    cols = min(4, len(labels))
    nrows = -(-len(labels) // cols)
    fig = Figure(figsize=(2.6 * cols + 1, 2.3 * nrows + 0.4), dpi=100, layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, cols, squeeze=False)).reshape(-1)
    image = None
    for ax, label in zip(axes, labels, strict=False):
        grid = np.array([[means.get((label, n, d), np.nan) for n in lengths] for d in depths])
        image = ax.imshow(grid, vmin=0, vmax=1, cmap="viridis", aspect="auto", origin="upper")
        for (r, c), value in np.ndenumerate(grid):
            text = "n/a" if np.isnan(value) else f"{value:.2f}"
            ax.text(c, r, text, ha="center", va="center", fontsize=7,
                    color="white" if np.isnan(value) or value < 0.6 else "black")
        ax.set_xticks(range(len(lengths)), [str(n) for n in lengths], fontsize=7)
        ax.set_yticks(range(len(depths)), [f"{d:g}" for d in depths], fontsize=7)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("length", fontsize=8)
        ax.set_ylabel("key depth", fontsize=8)
    for ax in axes[len(labels):]:
        ax.set_visible(False)
    if image is not None:
        fig.colorbar(image, ax=list(axes[:len(labels)]), label="exact match", shrink=0.8)
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
