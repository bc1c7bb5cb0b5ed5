"""`posbench eval-extrapolate`."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import typer
from rich.table import Table

from ..common import DEVICE, resolve_device
from ..evaluation.extrapolate import EvalSettings, extrapolation_report
from ..evaluation.scoring import parse_lengths
from ..fileio import atomic_write
from ..pretrained import is_pretrained
from ..pretrained.evaluate import pretrained_report
from ..runs.folder import write_json
from . import app, console

DEFAULT = EvalSettings()


def _style(ratio: float | None) -> str:
    """Green when better than at the training length, through yellow, to red when it explodes."""
    if ratio is None:
        return "dim"
    return ("green" if ratio <= 1.0 else "yellow" if ratio <= 1.2 else "dark_orange" if ratio <= 2.0
            else "red" if ratio <= 10.0 else "bold red")


def _ratios(run: dict) -> dict[tuple[str, int], float | None]:
    """(mode, length) -> perplexity / perplexity at the training length of the same mode."""
    at_l = {r["mode"]: r["ppl"] for r in run["results"] if r["length"] == run["train_len"] and r["ppl"]}
    return {(r["mode"], r["length"]): r["ppl"] / at_l[r["mode"]] if r["ppl"] and r["mode"] in at_l else None
            for r in run["results"]}


def _labels(runs: list[dict]) -> list[str]:
    names = [r.get("label", r["pos"]) for r in runs]
    return [n if names.count(n) == 1 else f"{Path(r['run']).name} ({n})" for n, r in zip(names, runs, strict=True)]


def _plus_minus(value: float, ci: list[float] | None, spec: str = ".2f") -> str:
    """'48.00 ±1.21': the value and half the width of its 95% interval (asymmetric in ppl: the
    exact ends are in --json/--csv)."""
    return format(value, spec) + ("" if ci is None else f" ±{(ci[1] - ci[0]) / 2:{spec}}")


def _length_table(runs: list[dict], mode: str, stride: int | None) -> Table:
    labels = _labels(runs)
    # rows in other token units (a pretrained model's tokenizer beside another's, or a run's): only
    # bits per byte compare across them, so they lead
    by_bytes = len({run.get("tokenizer") for run in runs}) > 1
    table = Table(title=f"{'bits per byte' if by_bytes else 'perplexity'} by length ({mode})", title_justify="left",
                  caption_justify="left")
    table.add_column("length", justify="right")
    names = ("bpb", "ppl", "tokens", "× at L") if by_bytes else ("ppl", "bpb", "tokens", "× at L")
    for label in labels:
        for i, name in enumerate(names):
            table.add_column(f"{label if i == 0 else ''}\n{name}", justify="right")
    na: dict[str, list] = {}  # label -> [lengths, first reason]
    for length in sorted({r["length"] for run in runs for r in run["results"]}):
        row = [str(length)]
        for run, label in zip(runs, labels, strict=True):
            r = next((r for r in run["results"] if r["mode"] == mode and r["length"] == length), None)
            ratio = _ratios(run).get((mode, length))
            if r is None:
                row += ["", "", "", ""]
            elif r["ppl"] is None:
                row += ["[dim]n/a[/]", "[dim]n/a[/]", f"{r['tokens']:,}", ""]
                na.setdefault(label, [[], r["error"]])[0].append(str(length))
            else:
                style = _style(ratio)
                ppl, bpb = f"[{style}]{_plus_minus(r['ppl'], r.get('ppl_ci'))}[/]", f"{r['bpb']:.3f}"
                if by_bytes:
                    ppl, bpb = _plus_minus(r["bpb"], r.get("bpb_ci"), ".3f"), f"[{style}]{r['ppl']:.2f}[/]"
                row += [ppl, bpb, f"{r['tokens']:,}", f"[{style}]{ratio:.2f}[/]" if ratio is not None else ""]
        table.add_row(*row)
    counts = sorted({r["tokens"] for run in runs for r in run["results"]})
    blocks = sorted({r["blocks"] for run in runs for r in run["results"] if r.get("blocks")})
    split = runs[0]["split"]
    lines = [f"{' / '.join(f'{c:,}' for c in counts)} predictions of the {split} split scored at every length, "
             f"in {' / '.join(map(str, blocks)) or 'no'} blocks, one in each stretch of the split"
             + ("" if mode == "nonoverlapping" else f"; stride {stride if stride else 'half the window'}"),
             f"{'bpb' if by_bytes else 'ppl'} ±: half the width of a 95% t interval over the blocks "
             "(docs/statistics.md); more --max-tokens, more blocks, narrower"
             + ("; the rows' tokens differ, so bits per byte lead (perplexities compare only within a row)"
                if by_bytes else "")]
    notes = [f"n/a ({label} at {', '.join(ns)}): {reason}" for label, (ns, reason) in na.items()]
    table.caption = "\n".join(lines + notes)
    return table


def _context_table(runs: list[dict]) -> Table:
    """Context use: the same targets given C tokens of context, and each C against the previous one."""
    labels = _labels(runs)
    table = Table(title="context use: the same targets given C tokens of context", title_justify="left",
                  caption_justify="left")
    table.add_column("context", justify="right")
    for label in labels:
        table.add_column(f"{label}\nppl", justify="right")
        table.add_column("\n× previous", justify="right")
    for length in sorted({r["length"] for run in runs for r in run["context_use"]}):
        row = [str(length)]
        for run in runs:
            r = next((r for r in run["context_use"] if r["length"] == length), None)
            versus = (r or {}).get("vs_previous")
            row += ["" if r is None or r["ppl"] is None else _plus_minus(r["ppl"], r.get("ppl_ci")),
                    "" if not versus else versus_text(versus)]
        table.add_row(*row)
    targets = sorted({r["tokens"] for run in runs for r in run["context_use"]})
    table.caption = (f"{' / '.join(f'{n:,}' for n in targets)} targets (the last L/4 predictions of blocks spread "
                     "over the split), each given C tokens before it; × previous: the loss with C over the loss "
                     "with the previous C, paired over blocks, [95% interval]; green: more context helps beyond noise")
    return table


def versus_text(versus: dict) -> str:
    ci = versus.get("ci")
    text = f"{versus['ratio']:.3f}" + ("" if ci is None else f" [{ci[0]:.3f}–{ci[1]:.3f}]")
    return f"[green]{text}[/]" if ci and ci[1] < 1 else f"[red]{text}[/]" if ci and ci[0] > 1 else text


def _position_table(runs: list[dict]) -> Table:
    labels = _labels(runs)
    ends = {run["run"]: max((b["end"] for b in run["position_loss"]), default=0) for run in runs}
    table = Table(title="mean loss by position inside the longest window", title_justify="left",
                  caption="loss (N): mean over the windows of the longest length N that ran; "
                          "× at L: perplexity relative to positions [0, L)", caption_justify="left")
    table.add_column("positions", justify="right")
    for label, run in zip(labels, runs, strict=True):
        table.add_column(f"{label}\nloss ({ends[run['run']]:,})", justify="right")
        table.add_column("\n× at L", justify="right")
    for start, end in sorted({(b["start"], b["end"]) for run in runs for b in run["position_loss"]}):
        row = [f"[{start:,}, {end:,})"]
        for run in runs:
            buckets = run["position_loss"]
            b = next((b for b in buckets if (b["start"], b["end"]) == (start, end)), None)
            if b is None:
                row += ["", ""]
                continue
            ratio = math.exp(min(b["loss"] - buckets[0]["loss"], 700.0))
            row += [f"{b['loss']:.3f}", f"[{_style(ratio)}]{ratio:.2f}[/]"]
        table.add_row(*row)
    return table


def _csv(runs: list[dict]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["run", "pos", "train_len", "mode", "length", "tokens", "ppl", "bpb", "ratio_to_train_len",
                     "ppl_ci_low", "ppl_ci_high", "bpb_ci_low", "bpb_ci_high", "error"])
    for run in runs:
        ratios = _ratios(run)
        for r in run["results"]:
            numbers = [r["ppl"], r["bpb"], ratios.get((r["mode"], r["length"])), *(r.get("ppl_ci") or [None] * 2),
                       *(r.get("bpb_ci") or [None] * 2)]
            writer.writerow([run["run"], run["pos"], run["train_len"], r["mode"], r["length"], r["tokens"],
                             *("" if x is None else f"{x:.6g}" for x in numbers), r.get("error", "")])
    return out.getvalue()


@app.command("eval-extrapolate")
def eval_extrapolate_command(
    runs: list[Path] = typer.Argument(None, help="Run folders, or hf:MODEL: a Hugging Face causal LM, a hub name "
                                      "(hf:gpt2) or a local folder (needs pip install 'posbench[hf]') "
                                      "[default: the newest run under runs/]."),
    max_len: int = typer.Option(None, help=f"Longest evaluation length (default lengths: L, 2L, 4L, ... up to it) "
                                f"[default: {DEFAULT.max_len}; hf: models: their trained context × 1/2, 1, 2, 4, 8]."),
    lengths: str = typer.Option(None, help="Comma-separated lengths instead, e.g. 128,256,1024."),
    split: str = typer.Option(DEFAULT.split, help="Held-out split: valid or test."),
    mode: str = typer.Option(DEFAULT.mode, help="nonoverlapping, sliding or both."),
    stride: int = typer.Option(None, help="Sliding step [default: half the evaluation window]; 1 is allowed."),
    max_tokens: int = typer.Option(DEFAULT.max_tokens, help="Predictions scored at every length, at most "
                                   "(rounded down to whole blocks of the longest length, one in each stretch of "
                                   "the split; at least one). More blocks buy a narrower 95% interval: 4x the "
                                   "tokens, about half the width; with fewer than 2 blocks there is none."),
    data: str = typer.Option(None, help="Evaluate on this corpus instead of the run's own "
                             "(tokenised with the run's tokenizer; hf: models, with their own, default pydocs)."),
    device: str = typer.Option(DEVICE, help="auto, cpu or cuda."),
    json_path: Path = typer.Option(None, "--json", help="Write the results to this JSON file."),
    csv_path: Path = typer.Option(None, "--csv", help="Write one row per (run, mode, length) to this CSV file."),
    quiet: bool = typer.Option(False, "--quiet", help="No progress bar."),
    rope_scaling: str = typer.Option(None, help="Rescale a rotary model's frequencies for evaluation, no "
                                     "retraining: linear (position interpolation), ntk, yarn or dynamic (hf: models: "
                                     "linear, dynamic or yarn, set in the model's own rope-scaling config)."),
    rope_factor: float = typer.Option(None, help="The RoPE scaling factor, e.g. 4 to reach 4x the training length "
                                      "(default: max-len / L)."),
    context_use: bool = typer.Option(DEFAULT.context_use, "--context-use/--no-context-use",
                                     help="Also score the same targets given each context length >= L: does the "
                                     "model use the longer context (docs/statistics.md)?"),
    precision: str = typer.Option(None, help="hf: models' weights: fp32, bf16 or auto [default: fp32 on the CPU, "
                                  "bf16 on CUDA]; posbench's runs are scored in fp32."),
) -> None:
    """Perplexity by length: how a model trained at length L does at L, 2L, 4L, ... (train short, test long)."""
    settings = EvalSettings(
        lengths=parse_lengths(lengths) if lengths is not None else None, max_len=max_len or DEFAULT.max_len,
        split=split, mode=mode,
        stride=stride, max_tokens=max_tokens, data=data, device=str(resolve_device(device)),
        rope_scaling=None if rope_scaling is None else (rope_scaling, rope_factor), context_use=context_use,
    )
    if any(is_pretrained(run) for run in runs or []):
        report = pretrained_report(runs, settings, console, not quiet, precision, max_len)
    else:
        report = extrapolation_report(runs or [None], settings, console=console, show_progress=not quiet)
    results = report["runs"]
    for run in results:
        console.print(f"[bold]{run['run']}[/]: {run['label']}, trained at L = {run['train_len']}", highlight=False)
        for note in run.get("notes", []):
            console.print(f"  [yellow]note:[/] {note}", highlight=False)
    for m in ("nonoverlapping", "sliding"):
        if any(r["mode"] == m for run in results for r in run["results"]):
            console.print(_length_table(results, m, stride))
    console.print(_position_table(results))
    if any(run.get("context_use") for run in results):
        console.print(_context_table(results))
        for run, label in zip(results, _labels(results), strict=True):
            console.print(f"  {label}: {run.get('context_verdict', 'context use not measured')}", highlight=False)
    if json_path is not None:
        write_json(json_path, report)
        console.print(f"wrote {json_path}", highlight=False)
    if csv_path is not None:
        atomic_write(csv_path, _csv(results).encode())
        console.print(f"wrote {csv_path}", highlight=False)
