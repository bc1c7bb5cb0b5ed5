"""`posbench compare`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from ..experiments.compare import CompareConfig, compare, parse_methods, parse_rope_scaling
from ..experiments.presets import CORPUS_PRESETS
from ..experiments.verdicts import within_noise
from ..positions import METHODS, TEMPERATURES
from ..pretrained import is_pretrained
from ..pretrained.compare import compare_models
from . import app, console

DEFAULT = CompareConfig()


def _fmt(x: float | None, spec: str = ".2f") -> str:
    return "n/a" if x is None else format(x, spec)


def _cell(r: dict | None) -> str:
    """'48.0±1.2': perplexity and half the width of its 95% interval (the exact ends are in results.json)."""
    if r is None or r["ppl"] is None:
        return "n/a"
    value, spec = r["ppl"], ".1f" if r["ppl"] < 100 else ".0f"
    if not r.get("ppl_ci"):
        return format(value, spec)
    half = (r["ppl_ci"][1] - r["ppl_ci"][0]) / 2
    return f"{value:{spec}}±{half:{'.1f' if half < 10 else '.0f'}}"


def _is_best(r: dict | None, label: str) -> bool:
    """The best at its length, or no different from it within the noise."""
    versus = (r or {}).get("vs_best")
    return bool(versus) and (versus["best"] == label or within_noise(versus))


def comparison_table(rows: list[dict], failures: list[dict] = ()) -> Table:
    """Rows = methods, columns = evaluation lengths (ppl ± half its 95% interval; bold green: the best,
    and any method within noise of it), then params, train tokens/s, validation ppl at L and ppl at
    the longest length / ppl at L. About 100 columns; the verdicts follow the table, one line each."""
    lengths = sorted({r["length"] for row in rows for r in row["results"]})
    train_lens = sorted({row["train_len"] for row in rows})
    table = Table(title=f"perplexity by evaluation length (trained at L = {', '.join(map(str, train_lens))})",
                  title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, padding=(0, 1), collapse_padding=True)
    table.add_column("method", style="bold", no_wrap=True)
    for n in lengths:
        table.add_column(str(n), justify="right", no_wrap=True)
    for name in ("params", "tok/s", "val ppl", "max/L"):
        table.add_column(name, justify="right")
    for row in rows:
        by_length = {r["length"]: r for r in row["results"]}
        cells = [f"[bold green]{_cell(by_length.get(n))}[/]" if _is_best(by_length.get(n), row["label"])
                 else _cell(by_length.get(n)) for n in lengths]
        ratio = row["max_len_ratio"]
        colour = "green" if ratio is not None and ratio <= 1.1 else "red" if ratio is None or ratio > 2 else "yellow"
        params = None if row["params"] is None else row["params"] / 1e6
        speed = None if row["train_tokens_per_s"] is None else row["train_tokens_per_s"] / 1e3
        table.add_row(row["label"], *cells, _fmt(params, ".1f") + "M" * (params is not None),
                      _fmt(speed, ".1f") + "k" * (speed is not None),  # a pretrained model has no training speed
                      _fmt(row["val_ppl"], ".0f"), f"[{colour}]{_fmt(ratio)}[/]")
    for failure in failures:
        table.add_row(failure["label"], "[bold red]failed[/]", *[""] * (len(lengths) + 3))
    return table


def _versus(r: dict | None, label: str) -> str:
    """How a method stands against the best at one length, claiming a difference only outside the noise."""
    versus = (r or {}).get("vs_best")
    if not versus or r["ppl"] is None:
        return "n/a"
    if versus["best"] == label:
        return "best"
    text = f"{versus['ratio']:.3f}x {versus['best']}"
    if versus["ci"] is None:
        return text
    interval = f"[{versus['ci'][0]:.3f}–{versus['ci'][1]:.3f}]"
    return f"within noise of {versus['best']} ({text} {interval})" if within_noise(versus) else f"{text} {interval}"


def verdict_lines(rows: list[dict], failures: list[dict] = ()) -> list[str]:
    """Per method: its verdict, then how it stands against the best at L and at the longest length."""
    lines = []
    for row in rows:
        by_length = {r["length"]: r for r in row["results"] if r["mode"] == "nonoverlapping"}
        longest = max(by_length)
        at_l = _versus(by_length.get(row["train_len"]), row["label"])
        lines.append(f"  {row['label']:18s} {row['verdict']}; at L: {at_l}; at {longest}: "
                     f"{_versus(by_length[longest], row['label'])}")
    lines += [f"  {f['label']:18s} [bold red]failed:[/] {escape(f['error'])}" for f in failures]
    context = [row for row in rows if row.get("context_verdict")]
    if context:
        lines.append("context use (the same targets given more context; non-overlapping ppl at the longest length / "
                     "at L beside it):")
        lines += [f"  {row['label']:18s} {row['context_verdict']}; non-overlapping "
                  f"{_fmt(row['max_len_ratio'])}{'x' if row['max_len_ratio'] is not None else ''}"
                  for row in context]
    return lines


def noise_note(rows: list[dict]) -> str:
    """What the ± and the brackets are, from the rows themselves (given runs may mix seed counts)."""
    counts = sorted({len(row["seeds"]) for row in rows})
    blocks = sorted({r["blocks"] for row in rows for r in row["results"] if r.get("blocks")})
    units = f"{'/'.join(map(str, blocks)) or 'no'} blocks of text spread over the split"
    if counts == [1]:
        seeds = "one seed per row"
    elif counts[0] > 1:
        seeds = f"geometric mean over {'/'.join(map(str, counts))} seeds"
    else:
        seeds = f"rows of {'/'.join(map(str, counts))} seeds (one seed: the blocks' noise only)"
    return (f"{seeds}; ± half a 95% t interval over " + ("seeds and " if counts[-1] > 1 else "") + units
            + "; ratios paired over the same blocks" + (" and seeds" if counts[-1] > 1 else "")
            + "; bold: best, or within noise of the best")


@app.command("compare")
def compare_command(
    runs: list[Path] = typer.Argument(None, help="Existing run folders to compare (no training), and/or hf:MODEL: "
                                      "Hugging Face causal LMs (hub name or local folder; needs pip install "
                                      "'posbench[hf]'), evaluated on --data with their own tokenizers."),
    pos: str = typer.Option(",".join(DEFAULT.methods), help="Methods to train and compare, comma-separated; any of "
                            + ", ".join(METHODS) + ", each with an optional +TEMPERATURE ("
                            + ", ".join(TEMPERATURES) + "), e.g. rotary+ssmax."),
    preset: str = typer.Option(DEFAULT.preset, help="Experiment size: "
                               + "; ".join(f"{k}: {v.description}" for k, v in CORPUS_PRESETS.items()) + "."),
    data: str = typer.Option(DEFAULT.data, help="Corpus: pydocs, stdlib, a .txt file or a folder with "
                             "train/valid/test.txt."),
    train_len: int = typer.Option(None, "--train-len", "--seq-len", help="Training length L (default: the preset's)."),
    max_len: int = typer.Option(None, help="Longest evaluation length (default: the preset's)."),
    eval_tokens: int = typer.Option(None, help="Predictions scored at every length (default: the preset's), in "
                                    "blocks of the longest length spread over the split; more blocks buy narrower "
                                    "intervals: 4x the tokens, about half the width."),
    seed: int = typer.Option(DEFAULT.seed, help="One seed for every method (the first, with --seeds)."),
    seeds: int = typer.Option(DEFAULT.seeds, help="Train every method with N seeds (seed, seed+1, ...; init and "
                              "data order differ, the tokenizer is the same): runs in --out/<method>/seed<k> "
                              "when N > 1; per length the geometric mean with a 95% interval over seeds and blocks. "
                              "N times the training time."),
    out: Path = typer.Option(DEFAULT.out, help="Folder for the runs and results.json/csv/png."),
    device: str = typer.Option(DEFAULT.device, help="auto, cpu or cuda."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bars."),
    embed_norm: bool | None = typer.Option(DEFAULT.embed_norm, "--embed-norm/--no-embed-norm",
                                           help="Train every method with (or without) a LayerNorm right after "
                                           "the embedding; runs in --out/<label>, labelled e.g. alibi+ln, "
                                           "scaled-sinusoidal+noln. "
                                           "Default: as each method's reference: on for scaled-sinusoidal "
                                           "(cramming), off for the others."),
    precision: str = typer.Option(None, help="CPU training precision: fp32 (default), bf16 or auto (bf16 where "
                                  "the CPU has bf16 instructions); runs of another precision are other runs. hf: "
                                  "models: their weights' precision [default: fp32 on the CPU, bf16 on CUDA]."),
    jobs: int | None = typer.Option(DEFAULT.jobs, help="Train and evaluate this many runs side by side, each on "
                                    "its share of the CPU threads (1: one at a time). Default: 2 on a CPU with two "
                                    "threads or more, else 1 (POSBENCH_JOBS sets it)."),
    rope_scaling: str = typer.Option(None, help="Also evaluate runs with rotary layers with rescaled frequencies, no "
                                     "retraining: comma-separated KIND[:FACTOR], KIND linear, ntk, yarn or dynamic "
                                     "(FACTOR default: max-len / L). Each adds a row, e.g. rotary+yarn×16."),
) -> None:
    """Train every method under one config (reusing finished runs in --out), evaluate all at the same
    lengths on the same windows, print one table with 95% intervals and write results.json, results.csv,
    ppl_vs_length.png and loss_curves.png. A method that fails is reported as failed, the others go on,
    and the exit code is 1; the same command again retries only what failed."""
    cfg = CompareConfig(parse_methods(pos), preset, data, train_len, max_len, seed, out, device, embed_norm,
                        parse_rope_scaling(rope_scaling), seeds=seeds, eval_tokens=eval_tokens, precision=precision,
                        jobs=jobs)
    if any(is_pretrained(run) for run in runs or []):  # pretrained models, paired only on the same tokens
        results = compare_models(cfg, runs, console, show_progress=not quiet)
    else:
        results = compare(cfg, runs or [], console, show_progress=not quiet)
    failures = results["failures"]
    console.print(comparison_table(results["runs"], failures))
    tokens = {r["tokens"] for row in results["runs"] for r in row["results"]}
    console.print(f"{', '.join(map(str, sorted(tokens)))} tokens scored at every length (non-overlapping "
                  f"windows); {noise_note(results['runs'])}; wall time {results['wall_seconds']:.0f} s",
                  highlight=False)
    for line in verdict_lines(results["runs"], failures):
        console.print(line, highlight=False, soft_wrap=True)  # a log keeps each verdict on one line
    plots = ["ppl_vs_length.png", *(["context_use.png"] if any(r.get("context_use") for r in results["runs"]) else []),
             "loss_curves.png"]
    console.print(f"wrote {out}/results.json, results.csv, {', '.join(results.get('plots', plots))}", highlight=False)
    if failures:
        console.print(f"[bold red]{len(failures)} failed[/]; run the same command again to retry only "
                      f"{'it' if len(failures) == 1 else 'them'}", highlight=False)
        raise typer.Exit(1)
