"""`posbench train`."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import typer
from rich.table import Table

from ..positions import METHODS, TEMPERATURES
from ..runs.config import ModelConfig, TrainConfig
from ..runs.folder import check_run_dir
from ..train import train
from . import app, console

DEFAULT_MODEL = ModelConfig()
DEFAULT_TRAIN = TrainConfig()


@app.command("train")
def train_command(
    pos: str = typer.Option(DEFAULT_MODEL.pos, help="Position method: " + ", ".join(METHODS) + "; add a "
                            "temperature with +NAME (" + ", ".join(TEMPERATURES) + "), e.g. rotary+ssmax."),
    window: int = typer.Option(DEFAULT_MODEL.window, help="Hybrids (rnope-swa, irope): the sliding window or "
                               "chunk in tokens; llama4: the temperature's floor. Default: half of --train-len."),
    drop_at: float = typer.Option(DEFAULT_MODEL.drop_at, help="drope: the fraction of training after which RoPE "
                                  "is dropped; the rest recalibrates without it."),
    rope_fraction: float = typer.Option(DEFAULT_MODEL.rope_fraction, help="p-rope: the fraction of rotary "
                                        "frequencies kept (the fastest ones)."),
    data: str = typer.Option(DEFAULT_TRAIN.data, help="Corpus: pydocs (builtin prose), stdlib (builtin code), "
                             "a .txt file, or a folder with train/valid/test.txt."),
    tokenizer: str = typer.Option(DEFAULT_TRAIN.tokenizer, help="bpe (sentencepiece, trained on the train split) "
                                  "or bytes."),
    vocab_size: int = typer.Option(DEFAULT_TRAIN.vocab_size, help="BPE vocabulary size."),
    train_len: int = typer.Option(DEFAULT_TRAIN.train_len, "--train-len", "--seq-len",
                                  help="Training length L (tokens per window)."),
    layers: int = typer.Option(DEFAULT_MODEL.n_layer, help="Transformer layers."),
    heads: int = typer.Option(DEFAULT_MODEL.n_head, help="Attention heads."),
    dim: int = typer.Option(DEFAULT_MODEL.d_model, help="Model width."),
    embed_norm: bool | None = typer.Option(None, "--embed-norm/--no-embed-norm", help="LayerNorm right after "
                                           "the embedding (BigScience found it hurts). Default: as the method's "
                                           "reference: on for scaled-sinusoidal, whose cramming code has it; off "
                                           "for the others. --no-embed-norm drops scaled-sinusoidal's."),
    random_positions: int = typer.Option(DEFAULT_TRAIN.random_positions, "--random-positions", metavar="M",
                                         help="Randomized positions (Ruoss et al. 2023): each batch's tokens sit at "
                                         "a sorted random subset of [0, M) instead of 0..n-1, in training and when "
                                         "the run is evaluated. M >= --train-len; not for learned (its table)."),
    pose: int = typer.Option(DEFAULT_TRAIN.pose, "--pose", metavar="M",
                             help="PoSE, positional skip-wise training (Zhu et al. 2024): each batch's ids in two "
                             "chunks, the second shifted by a random skip so they reach up to M - 1; evaluated at "
                             "0..n-1. M >= --train-len; not with --random-positions, not for learned."),
    batch_size: int = typer.Option(DEFAULT_TRAIN.batch_size, help="Windows per step (global, across processes)."),
    lr: float = typer.Option(DEFAULT_TRAIN.lr, help="Peak learning rate (warmup, then cosine decay)."),
    steps: int = typer.Option(DEFAULT_TRAIN.steps, help="Optimizer steps."),
    warmup: int = typer.Option(DEFAULT_TRAIN.warmup, help="Linear warmup steps."),
    minutes: float = typer.Option(None, help="Train for this many minutes instead of --steps."),
    seed: int = typer.Option(DEFAULT_TRAIN.seed, help="Seed for init, data order and tokenizer."),
    device: str = typer.Option(DEFAULT_TRAIN.device, help="auto, cpu or cuda."),
    compile: bool = typer.Option(DEFAULT_TRAIN.compile, "--compile", help="Use torch.compile."),
    precision: str = typer.Option(DEFAULT_TRAIN.precision, help="CPU training precision: fp32, bf16 (autocast; "
                                  "fp32 weights, optimizer, loss and attention) or auto (bf16 where the CPU has bf16 "
                                  "instructions, AVX512-BF16 or AMX). CUDA trains in bf16 autocast."),
    save_every: int = typer.Option(DEFAULT_TRAIN.save_every, help="Checkpoint every N steps."),
    eval_every: int = typer.Option(DEFAULT_TRAIN.eval_every, help="Validation loss every N steps."),
    eval_tokens: int = typer.Option(DEFAULT_TRAIN.eval_tokens, help="Validation tokens per evaluation."),
    log_every: int = typer.Option(DEFAULT_TRAIN.log_every, help="Write metrics every N steps."),
    out: Path = typer.Option(None, help="Run folder [default: runs/<pos>-<timestamp>]."),
    resume: Path = typer.Option(None, help="Continue the unfinished run in this folder with its own config."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace a run with a different config in --out."),
) -> None:
    """Train a small GPT with one position method and write a run folder."""
    if resume is not None:
        run_config = check_run_dir(resume)
        model_config, train_config = run_config.model, replace(run_config.train, device=device)
        out = resume
    else:
        model_config = ModelConfig(n_layer=layers, n_head=heads, d_model=dim, pos=pos, embed_norm=embed_norm,
                                   window=window, drop_at=drop_at, rope_fraction=rope_fraction)
        train_config = TrainConfig(
            data=data, tokenizer=tokenizer, vocab_size=vocab_size, train_len=train_len, batch_size=batch_size,
            lr=lr, steps=steps, minutes=minutes, seed=seed, device=device, compile=compile, precision=precision,
            save_every=save_every, eval_every=eval_every, warmup=warmup, eval_tokens=eval_tokens,
            log_every=log_every, random_positions=random_positions, pose=pose,
        )
    result = train(model_config, train_config, out=out, overwrite=overwrite, console=console)
    if os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 alone reports
    s = result.summary
    if result.already_finished:
        console.print(f"[green]{result.run_dir} already holds this finished run[/] (use --overwrite to retrain)")
    elif result.resumed_from:
        console.print(f"resumed from step {result.resumed_from}")
    label = model_config.label()
    table = Table(title=f"{label} run", show_header=False, title_justify="left")
    for name, value in (
        ("parameters", f"{s['params']:,}"),
        ("tokens seen", f"{s['tokens_seen']:,} ({s['steps']} steps)"),
        ("train loss", f"{s['train_loss']:.3f}"),
        ("val loss / ppl", f"{s['val_loss']:.3f} / {s['val_ppl']:.2f}"),
        ("val bits per byte", f"{s['val_bpb']:.3f}"),
        ("wall time", f"{s['train_seconds']:.0f} s"
         + (f", {s['tokens_per_s']:,.0f} tokens/s" if s.get("tokens_per_s") else "")),
        ("run folder", str(result.run_dir)),
    ):
        table.add_row(name, value)
    console.print(table)
