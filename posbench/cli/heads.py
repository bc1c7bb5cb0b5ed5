"""`posbench inspect-heads`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..common import DEVICE, resolve_device
from ..errors import PosbenchError
from ..evaluation.heads import SAMPLES, inspect_heads
from ..experiments.plots import plot_heads
from ..pretrained import is_pretrained
from ..pretrained.heads import inspect_model_heads
from ..runs.folder import write_json
from . import app, console


def _spread(s: dict) -> str:
    return f"{s['min']:g} / {s['median']:g} / {s['max']:g}"


@app.command("inspect-heads")
def inspect_heads_command(
    run: Path = typer.Argument(None, help="Run folder, or hf:MODEL: a Hugging Face causal LM (hub name or local "
                               "folder; needs pip install 'posbench[hf]') [default: the newest run under runs/]."),
    length: int = typer.Option(None, help="Window length N [default: the training length; hf: models: their "
                               "trained context]."),
    samples: int = typer.Option(SAMPLES, help="Windows K, spread evenly over the split."),
    split: str = typer.Option("valid", help="Held-out split: valid or test."),
    layer: int = typer.Option(None, help="Only this layer (0-based) [default: all]."),
    json_path: Path = typer.Option(None, "--json", help="Write every number to this JSON file."),
    plot: Path = typer.Option(None, help="Write a PNG: span90 heatmap (and span vs slope for ALiBi)."),
    data: str = typer.Option(None, help="Probe windows of this corpus (tokenised with the model's tokenizer) "
                             "[default: the run's own; hf: models: pydocs]."),
    device: str = typer.Option(DEVICE, help="hf: models: auto, cpu or cuda (runs are probed on the CPU)."),
    precision: str = typer.Option(None, help="hf: models' weights: fp32, bf16 or auto [default: fp32 on the CPU, "
                                  "bf16 on CUDA]."),
) -> None:
    """Per-head attention span, distance, entropy and sink, from the model's attention probabilities."""
    if is_pretrained(run):
        report = inspect_model_heads(str(run), length, samples, split, layer, data, str(resolve_device(device)),
                                     precision)
    elif device not in (DEVICE, "cpu") or precision is not None:
        raise PosbenchError("--device and --precision are for hf: models; posbench's runs are probed on the CPU")
    else:
        report = inspect_heads(run, length=length, samples=samples, split=split, layer=layer, data=data)
    summary = report["summary"]
    console.print(f"[bold]{report['run']}[/] ({report['pos']}): {summary['samples']} windows of "
                  f"{report['length']} tokens from the {summary['split']} split", highlight=False)
    n_head = max(h["head"] for h in report["heads"]) + 1
    params = summary["params"]  # what the method says of itself: a column title and a label per head
    title, labels = params.get("column", "param"), params.get("head_labels", ["–"] * n_head)
    for entry in summary["layers"]:
        table = Table(title=f"layer {entry['layer']}", title_justify="left")
        for name in ("head", title, "mean distance", "span50", "span90", "entropy", "sink"):
            table.add_column(name, justify="right", no_wrap=name == title)  # narrow terminal: wrap headers
        rows = [h for h in report["heads"] if h["layer"] == entry["layer"]]
        for h in sorted(rows, key=lambda h: (h["span90"], h["mean_distance"])):
            table.add_row(str(h["head"]), labels[h["head"]], f"{h['mean_distance']:.1f}", str(h["span50"]),
                          str(h["span90"]), f"{h['entropy']:.2f}", f"{h['sink']:.3f}")
        console.print(table)

    console.print(f"[bold]summary[/] ({report['pos']}): span90 min / median / max over heads = "
                  f"{_spread(summary['span90'])} tokens", highlight=False)
    for entry in summary["layers"]:
        line = f"  layer {entry['layer']}: span90 {_spread(entry['span90'])}, span50 {_spread(entry['span50'])}"
        if "spearman_slope_span90" in entry:
            rho = entry["spearman_slope_span90"]
            line += "; Spearman(slope, span90) = " + ("n/a (a constant side)" if rho is None else f"{rho:+.2f}")
            if ci := entry.get("spearman_slope_span90_ci"):
                line += f" [95%: {ci[0]:+.2f}, {ci[1]:+.2f} over windows]"
            rho = entry["spearman_slope_mean_distance"]
            line += ", (slope, mean distance) = " + ("n/a" if rho is None else f"{rho:+.2f}")
        console.print(line, highlight=False)

    if json_path is not None:
        write_json(json_path, report)
        console.print(f"wrote {json_path}", highlight=False)
    if plot is not None:
        plot_heads(report, plot)
        console.print(f"wrote {plot}", highlight=False)
