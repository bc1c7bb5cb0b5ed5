"""`posbench compare`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.table import Table

from ..compare import CompareConfig, compare, parse_methods, parse_rope_scaling
from ..positions import METHODS
from ..presets import PRESETS
from . import app, console

DEFAULT = CompareConfig()


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def comparison_table(rows: list[dict]) -> Table:
    """Rows = methods, columns = evaluation lengths (best per column in bold green), then params,
    train tokens/s, validation ppl at L and ppl at the longest length / ppl at L. Compact enough
    for an 80-column terminal; the verdicts follow the table, one line each."""
    lengths = sorted({r["length"] for row in rows for r in row["results"]})
    ppl = {(row["label"], r["length"]): r["ppl"] for row in rows for r in row["results"]}
    best = {n: min((v for (_, m), v in ppl.items() if m == n and v is not None), default=None) for n in lengths}
    train_lens = sorted({row["train_len"] for row in rows})
    table = Table(title=f"perplexity by evaluation length (trained at L = {', '.join(map(str, train_lens))})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("method", style="bold", no_wrap=True)
    for n in lengths:
        table.add_column(str(n), justify="right")
    for name in ("params", "tok/s", "val ppl", "max/L"):
        table.add_column(name, justify="right")
    for row in rows:
        cells = []
        for n in lengths:
            value = ppl.get((row["label"], n))
            text = _fmt(value, ".1f" if value is None or value < 100 else ".0f")
            cells.append(f"[bold green]{text}[/]" if value is not None and value == best[n] else text)
        ratio = row["max_len_ratio"]
        colour = "green" if ratio is not None and ratio <= 1.1 else "red" if ratio is None or ratio > 2 else "yellow"
        params = None if row["params"] is None else row["params"] / 1e6
        speed = None if row["train_tokens_per_s"] is None else row["train_tokens_per_s"] / 1e3
        table.add_row(row["label"], *cells, f"{_fmt(params, '.1f')}M", f"{_fmt(speed, '.1f')}k",
                      _fmt(row["val_ppl"], ".0f"), f"[{colour}]{_fmt(ratio)}[/]")
    return table


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(None, help="Existing run folders to compare (no training)."),
    pos: str = typer.Option(",".join(DEFAULT.methods), help="Methods to train and compare, comma-separated; any of "
                            + ", ".join(METHODS) + "."),
    preset: str = typer.Option(DEFAULT.preset, help="Experiment size: "
                               + "; ".join(f"{k}: {v.description}" for k, v in PRESETS.items()) + "."),
    data: str = typer.Option(DEFAULT.data, help="Corpus: pydocs, stdlib, a .txt file or a folder with "
                             "train/valid/test.txt."),
    train_len: int = typer.Option(None, "--train-len", "--seq-len", help="Training length L (default: the preset's)."),
    max_len: int = typer.Option(None, help="Longest evaluation length (default: the preset's)."),
    seed: int = typer.Option(DEFAULT.seed, help="One seed for every method."),
    out: Path = typer.Option(DEFAULT.out, help="Folder for the runs and results.json/csv/png."),
    device: str = typer.Option(DEFAULT.device, help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    embed_norm: bool | None = typer.Option(DEFAULT.embed_norm, "--embed-norm/--no-embed-norm",
                                           help="Train every method with (or without) a LayerNorm right after "
                                           "the embedding; runs in --out/<label>, labelled e.g. alibi+ln, "
                                           "scaled-sinusoidal+noln. "
                                           "Default: as each method's reference: on for scaled-sinusoidal "
                                           "(cramming), off for the others."),
    rope_scaling: str = typer.Option(None, help="Also evaluate rotary/xpos runs with rescaled frequencies, no "
                                     "retraining: comma-separated KIND[:FACTOR], KIND linear, ntk or yarn "
                                     "(FACTOR default: max-len / L). Each adds a row, e.g. rotary+yarn×16."),
) -> None:
    """Train every method under one config (reusing finished runs in --out), evaluate all at the same
    lengths, print one table and write results.json, results.csv and ppl_vs_length.png."""
    cfg = CompareConfig(parse_methods(pos), preset, data, train_len, max_len, seed, out, device, embed_norm,
                        parse_rope_scaling(rope_scaling))
    results = compare(cfg, runs or [], console, show_progress=not quiet)
    console.print(comparison_table(results["runs"]))
    tokens = {r["tokens"] for row in results["runs"] for r in row["results"]}
    console.print(f"{', '.join(map(str, sorted(tokens)))} tokens scored at every length "
                  f"(non-overlapping windows); wall time {results['wall_seconds']:.0f} s", highlight=False)
    for row in results["runs"]:
        console.print(f"  {row['label']:18s} {row['verdict']}", highlight=False)  # the verdicts, one line each
    console.print(f"wrote {out}/results.json, results.csv, ppl_vs_length.png", highlight=False)
