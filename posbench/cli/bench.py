"""`posbench bench`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.table import Table

from ..common import DEVICE, resolve_device
from ..experiments.bench import bench
from ..experiments.compare import parse_methods
from ..positions import SEED_METHODS
from ..runs.config import ModelConfig, TrainConfig
from ..runs.folder import write_json
from . import app, console

DEFAULT = ModelConfig()


@app.command("bench")
def bench_command(
    pos: str = typer.Option(",".join(SEED_METHODS), help="Methods to measure, comma-separated."),
    train_len: int = typer.Option(512, "--train-len", "--seq-len", help="Training length L (tokens per window)."),
    batch_size: int = typer.Option(8, help="Windows per step."),
    layers: int = typer.Option(DEFAULT.n_layer, help="Transformer layers."),
    heads: int = typer.Option(DEFAULT.n_head, help="Attention heads."),
    dim: int = typer.Option(DEFAULT.d_model, help="Model width."),
    steps: int = typer.Option(5, help="Timed steps per method and round (after 2 warm-up steps)."),
    rounds: int = typer.Option(2, help="Interleaved rounds over the methods; each keeps its best."),
    threads: int = typer.Option(None, help="CPU threads (default: torch's)."),
    device: str = typer.Option(DEVICE, help="auto, cpu or cuda."),
    compile: bool = typer.Option(False, "--compile", help="Time the models compiled (compiling not timed)."),
    precision: str = typer.Option(TrainConfig.precision, help="CPU precision, as `posbench train --precision`: "
                                  "fp32, bf16 (autocast) or auto (bf16 where the CPU has bf16 instructions). "
                                  "CUDA measures bf16 autocast, as it trains."),
    json_path: Path = typer.Option(None, "--json", help="Write the rows to this JSON file."),
) -> None:
    """Table 1 of the ALiBi paper for this machine: training and evaluation tokens/s and peak memory
    per method, each relative to `none`, measured in one run. Memory on a GPU is the allocator's peak;
    on the CPU it is what one step adds to the process's peak resident size (torch itself left out).
    Model FLOPs (bench.training_flops_per_token): 6 per weight a token multiplies plus attention's
    12 * layers * d * L; MFU on a known GPU against its datasheet bf16 peak."""
    methods = parse_methods(pos)
    model = {"n_layer": layers, "n_head": heads, "d_model": dim}
    ModelConfig(pos="none", **model)  # a bad shape fails here, with its message, before any process starts
    dev = str(resolve_device(device))
    with console.status(f"measuring {len(methods)} methods at L = {train_len} on {dev}"):
        rows = bench(methods, model, train_len, batch_size, steps, dev, threads, rounds, compile, precision)
    memory = "peak GPU memory" if dev.startswith("cuda") else "step RSS"  # see bench.peak_memory
    mfu = rows[0]["mfu"] is not None  # a GPU whose bf16 peak bench knows
    table = Table(title=f"speed and memory at L = {train_len}, batch {batch_size}, {layers} layers, d = {dim}, "
                  f"{heads} heads, {dev}{', compiled' if compile else ''}, {rows[0]['precision']}",
                  title_justify="left")
    for name in ("method", "params", "train tok/s (× none)", "eval tok/s (× none)", f"{memory} MB (× none)",
                 "train TFLOP/s", *(["MFU"] if mfu else [])):
        table.add_column(name, justify="left" if name == "method" else "right")
    for r in rows:
        table.add_row(r["pos"], f"{r['params'] / 1e6:.2f}M",
                      f"{r['train_tokens_per_s']:,.0f} ({r['train_vs_none']:.2f})",
                      f"{r['eval_tokens_per_s']:,.0f} ({r['eval_vs_none']:.2f})",
                      f"{r['peak_memory_mb']:,.0f} ({r['memory_vs_none']:.2f})",
                      f"{r['train_tflops']:.3g}", *([f"{r['mfu']:.1%}"] if mfu else []))
    console.print(table)
    if json_path is not None:
        write_json(json_path, {"train_len": train_len, "batch_size": batch_size, "model": model, "device": dev,
                               "rows": rows})
        console.print(f"wrote {json_path}", highlight=False)
