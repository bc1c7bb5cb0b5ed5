"""`posbench data fetch | list | info`."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.table import Table

from ..common import SPLITS, cache_dir, data_dir
from ..data.corpora import BUILTINS, load_corpus
from ..data.fetch import SOURCES, fetch, fetched_info
from ..data.tokens import tokenize_corpus
from ..runs.config import TrainConfig
from . import app, console

DEFAULT_TRAIN = TrainConfig()

data_app = typer.Typer(help="Corpora: download the named ones, list what is cached, measure one.",
                       no_args_is_help=True)
app.add_typer(data_app, name="data")


def _mb(n: float) -> str:
    return f"{n / 1e6:,.1f} MB" if n < 1e7 else f"{n / 1e6:,.0f} MB"


def _folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


@data_app.command("fetch")
def fetch_command(
    name: str = typer.Argument(..., help=f"Corpus to download: {', '.join(SOURCES)}."),
    dest: Path = typer.Option(None, help="Unpack train/valid/test.txt into this folder (then pass --data DIR) "
                              "instead of the data cache ($POSBENCH_DATA, else ~/.cache/posbench/corpora)."),
    force: bool = typer.Option(False, "--force", help="Download and unpack again even when already fetched."),
    no_verify: bool = typer.Option(False, "--no-verify", help="Skip the size and checksum check of the archive."),
) -> None:
    """Download a named corpus once (resumable, checksum-verified), unpacked into train/valid/test text."""
    result = fetch(name, dest, force=force, verify=not no_verify, console=console, progress=console.is_terminal)
    info = result.info
    if result.already:
        console.print(f"[green]{name} is already fetched[/] in {result.folder} (--force downloads it again)",
                      highlight=False)
    else:
        check = f"{info['checksum']} verified" if info["verified"] else "[yellow]not verified (--no-verify)[/]"
        console.print(f"[green]fetched {name}[/] from {info['url'] or 'the kept archive'}: {check}", highlight=False)
    console.print(f"{info['title']} in {result.folder}:", highlight=False)
    table = Table()
    for col in ("split", "file", "size"):
        table.add_column(col, justify="right" if col == "size" else "left")
    for s in SPLITS:
        table.add_row(s, f"{s}.txt", _mb(info["bytes"][s]))
    console.print(table)
    use = name if dest is None else str(result.folder)
    console.print(f"splits: {info['split']}\nuse it with: posbench train --data {use}", highlight=False)


BUILTIN_WHAT = {"pydocs": "English prose: pydoc topics and stdlib docstrings", "stdlib": "the stdlib's Python source"}


def _count(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.0f}k" if n >= 1e4 else f"{n:,}"


@data_app.command("list")
def list_command() -> None:
    """The built-in and named corpora with their sizes, and the tokenised sets in the token cache."""
    table = Table(title=f"corpora (fetched into {data_dir()})", title_justify="left")
    for col in ("name", "text", "status", "what"):
        table.add_column(col, justify="right" if col == "text" else "left")
    with console.status("building the built-in corpora to measure them"):
        builtins = {b: load_corpus(b).description for b in BUILTINS}
    for b, d in builtins.items():
        table.add_row(b, _mb(sum(d["bytes"].values())), "built in", BUILTIN_WHAT.get(b, d["source"]))
    for name, source in SOURCES.items():
        info = fetched_info(data_dir() / name)
        if info is None:
            row = (_mb(source.text_bytes), f"not fetched ({_mb(source.size or 0)} zip)")
        else:
            row = (_mb(sum(info["bytes"].values())), "fetched" + ("" if info.get("verified") else " (unverified)"))
        table.add_row(name, *row, source.title)
    console.print(table)

    tokens = Table(title=f"token cache ({cache_dir() / 'tokens'})", title_justify="left")
    for col in ("corpus", "tokenizer", "train", "valid", "test", "B/token", "disk"):
        tokens.add_column(col, justify="left" if col in ("corpus", "tokenizer") else "right",
                          **({"max_width": 24, "no_wrap": True, "overflow": "ellipsis"} if col == "corpus" else {}))
    for folder in sorted((cache_dir() / "tokens").glob("*/meta.json")):
        try:
            meta = json.loads(folder.read_text())
            corpus, tok, counts = meta["corpus"], meta["tokenizer"], meta["tokens"]
            label = corpus.get("name") or corpus["source"]  # named and hf corpora carry a name, the rest a path
            tokens.add_row(label, f"{tok['kind']} {tok['vocab_size']}", *(_count(counts[s]) for s in SPLITS),
                           f"{meta['bytes_per_token']['train']:.2f}", _mb(_folder_bytes(folder.parent)))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # a cache entry being written or damaged: prepare_data rebuilds it when needed
    console.print(tokens if tokens.row_count else "token cache: empty")


@data_app.command("info")
def info_command(
    data: str = typer.Option(DEFAULT_TRAIN.data, help="Corpus: pydocs, stdlib, wikitext-103, wikitext-2, enwik8, "
                             "hf:DATASET[:CONFIG], a .txt file or a folder."),
    tokenizer: str = typer.Option(DEFAULT_TRAIN.tokenizer, help="bpe or bytes."),
    vocab_size: int = typer.Option(DEFAULT_TRAIN.vocab_size, help="BPE vocabulary size."),
    seed: int = typer.Option(DEFAULT_TRAIN.seed, help="Tokenizer seed (the sample it is trained on)."),
) -> None:
    """Characters, bytes and tokens per split, and the tokenizer's bytes per token (tokenises once, cached)."""
    with console.status(f"loading {data}"):
        corpus = load_corpus(data)
    with console.status(f"tokenising {data} ({tokenizer}) or reading it from the token cache"):
        prepared = tokenize_corpus(corpus, tokenizer, vocab_size, seed)
    d = corpus.description
    table = Table(title=f"{corpus.name}: {d['kind']}, split {d.get('split', '?')}, "
                  f"{prepared.tokenizer.kind} tokenizer with {prepared.tokenizer.vocab_size:,} tokens",
                  title_justify="left")
    for col in ("split", "characters", "bytes", "tokens", "bytes/token"):
        table.add_column(col, justify="left" if col == "split" else "right")
    for s in SPLITS:
        table.add_row(s, f"{len(corpus.splits[s]):,}", f"{d['bytes'][s]:,}", f"{len(prepared.splits[s]):,}",
                      f"{prepared.bytes_per_token[s]:.3f}")
    console.print(table)
    console.print(f"source: {d['source']}\nsha256: {d['sha256']}", highlight=False)
