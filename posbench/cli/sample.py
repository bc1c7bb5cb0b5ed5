"""`posbench sample`."""

from __future__ import annotations

from pathlib import Path

import typer
from rich.text import Text

from ..common import DEVICE
from ..sample import NEW_TOKENS, SEED, TEMPERATURE, TOP_K, sample_text
from . import app, console


@app.command("sample")
def sample_command(
    run: Path = typer.Argument(None, help="Run folder (default: the newest under runs/)."),
    prompt: str = typer.Option("\n", show_default=False, help="Text to continue (default: a newline)."),
    tokens: int = typer.Option(NEW_TOKENS, help="New tokens to generate."),
    temperature: float = typer.Option(TEMPERATURE, help="Softmax temperature; 0 = greedy (argmax)."),
    top_k: int = typer.Option(TOP_K, help="Draw only from the k most likely tokens; 0 = from all."),
    seed: int = typer.Option(SEED, help="Seed of the draws (same seed, same text)."),
    device: str = typer.Option(DEVICE, help="auto, cpu or cuda."),
) -> None:
    """Continue a prompt with a trained run, decoding with a KV cache."""
    result = sample_text(run, prompt, tokens, temperature, top_k, seed, device)
    console.print(f"[dim]{result['run']} ({result['pos']}), {result['prompt_tokens']} prompt + "
                  f"{result['new_tokens']} new tokens, temperature {temperature:g}, top-k {top_k}, seed {seed}[/]",
                  highlight=False, soft_wrap=True)
    console.print(Text(result["prompt"], style="bold") + Text(result["completion"]), highlight=False, soft_wrap=True)
