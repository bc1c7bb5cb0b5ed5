"""Token ids of a corpus, cached on disk per (corpus hash, tokenizer settings), and the sampler that
draws training batches from them."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch

from ..common import SPLITS, cache_dir, rank0_first
from ..errors import PosbenchError
from ..fileio import atomic_write
from ..positions import training_draw
from ..runs.config import TrainConfig
from .corpora import Corpus, load_corpus
from .tokenizer import Tokenizer, train_tokenizer

FORMAT_VERSION = 2  # bump when the cache layout or the tokenizer settings change (2: sampled by characters)

@dataclass
class TokenData:
    tokenizer: Tokenizer
    splits: dict[str, np.ndarray]  # token ids per split, memory-mapped
    corpus: dict  # the Corpus.description
    bytes_per_token: dict[str, float]  # per split: UTF-8 bytes / tokens


def _load_cached(folder: Path, corpus: dict) -> TokenData | None:
    """The cached TokenData, or None when anything is missing or inconsistent (then it is rebuilt)."""
    try:
        meta = json.loads((folder / "meta.json").read_text())
        dtype = np.dtype(meta["dtype"])
        splits = {}
        for s in SPLITS:
            path = folder / f"{s}.bin"
            if meta["tokens"][s] < 1 or path.stat().st_size != meta["tokens"][s] * dtype.itemsize:
                return None
            splits[s] = np.memmap(path, dtype=dtype, mode="r", shape=(meta["tokens"][s],))
        tok = Tokenizer.load(folder)
    except (OSError, ValueError, KeyError, TypeError, PosbenchError):
        return None
    return TokenData(tok, splits, corpus, meta["bytes_per_token"])  # fresh description: the path may differ


def prepare_data(spec: str = "pydocs", tokenizer: str = "bpe", vocab_size: int = 4096,
                 seed: int = 0) -> TokenData:
    """Load a corpus, train its tokenizer and tokenise every split, cached under cache_dir()/tokens/<key>/."""
    if tokenizer not in ("bpe", "bytes"):
        raise PosbenchError(f"Unknown tokenizer kind {tokenizer!r}: use bpe or bytes.")
    return tokenize_corpus(load_corpus(spec), tokenizer, vocab_size, seed)


def tokenize_corpus(corpus: Corpus, tokenizer: str = "bpe", vocab_size: int = 4096, seed: int = 0) -> TokenData:
    """prepare_data for an already loaded corpus (the cache key is its sha256 and the tokenizer settings)."""
    if tokenizer not in ("bpe", "bytes"):
        raise PosbenchError(f"Unknown tokenizer kind {tokenizer!r}: use bpe or bytes.")
    if tokenizer == "bytes":
        vocab_size, seed = 256, 0  # neither changes a byte tokenizer, so they must not split the cache
    settings = {"format": FORMAT_VERSION, "corpus": corpus.description["sha256"], "tokenizer": tokenizer,
                "vocab_size": vocab_size, "seed": seed}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:20]
    folder = cache_dir() / "tokens" / key
    if (cached := _load_cached(folder, corpus.description)) is not None:
        return cached

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PosbenchError(f"Cannot create the token cache {folder} ({e.strerror}); set POSBENCH_CACHE.") from None
    tok = train_tokenizer(corpus.splits["train"], tokenizer, vocab_size, seed)
    dtype = np.dtype("<u2" if tok.vocab_size <= 65536 else "<u4")
    counts, bpt = {}, {}
    for s in SPLITS:
        def write(tmp: Path, text: str = corpus.splits[s], split: str = s) -> None:
            counts[split] = 0
            with open(tmp, "wb") as f:  # chunk by chunk: never the whole split's ids in memory at once
                for ids in tok.encode_chunks(text):
                    f.write(ids.astype(dtype).tobytes())
                    counts[split] += int(ids.size)

        atomic_write(folder / f"{s}.bin", write)
        bpt[s] = corpus.description["bytes"][s] / max(1, counts[s])
    tok.save(folder)
    meta = {"settings": settings, "corpus": corpus.description, "tokenizer": tok.describe(),
            "dtype": dtype.str, "tokens": counts, "bytes_per_token": bpt}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2).encode())  # last: marks the cache complete
    data = _load_cached(folder, corpus.description)
    assert data is not None, f"token cache {folder} was written but does not read back"
    return data


def corpus_sampler(cfg: TrainConfig, tokenizer_seed: int, batch_size: int, rank: int = 0,
                   world_size: int = 1) -> tuple[TokenData, BatchSampler]:
    """cfg.data tokenised (rank 0 first; the others then hit its cache) and this rank's sampler of its
    train split (batch_size windows of cfg.train_len). Raised before a run writes anything: a split too
    short for one window."""
    with rank0_first(rank, world_size):
        data = prepare_data(cfg.data, cfg.tokenizer, cfg.vocab_size, tokenizer_seed)
    length = cfg.train_len
    sampler = BatchSampler(data.splits["train"], length, batch_size, cfg.seed, rank, world_size, cfg.random_positions,
                           cfg.pose)
    if len(data.splits["valid"]) < length + 1:
        raise PosbenchError(f"the valid split has {len(data.splits['valid'])} tokens, fewer than one window of "
                            f"--train-len {length} + 1; use a longer corpus or a shorter --train-len")
    return data, sampler


class BatchSampler:
    """Random windows of length+1 tokens from a token array; x = window[:-1], y = window[1:]. With
    max_position (randomized positions, TrainConfig.random_positions) or pose (PoSE, TrainConfig.pose)
    also each batch's position ids."""

    def __init__(self, tokens: np.ndarray, length: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1, max_position: int | None = None, pose: int | None = None):
        if length < 1 or batch_size < 1:
            raise PosbenchError(f"the window length and batch_size must be positive (got {length} and {batch_size}).")
        if not 0 <= rank < world_size:
            raise PosbenchError(f"rank {rank} is outside world_size {world_size}.")
        if len(tokens) < length + 1:
            raise PosbenchError(
                f"The split has {len(tokens)} tokens, too few for a window of {length} (needs {length + 1}).")
        self.tokens, self.length, self.batch_size = tokens, length, batch_size
        self.rank, self.world_size = rank, world_size
        self.gen = torch.Generator().manual_seed(seed)
        self.offsets = np.arange(length + 1)
        self.draw = training_draw(max_position, pose, seed)

    def next_positions(self) -> torch.Tensor | None:
        """(length,) ids for the next batch (randomized positions or PoSE; one set for the whole global
        batch: every rank draws the same), or None: 0..length-1."""
        return None if self.draw is None else self.draw(self.length)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # every rank draws the same global batch and keeps its slice: N ranks see what one process would
        starts = torch.randint(0, len(self.tokens) - self.length, (self.batch_size * self.world_size,),
                               generator=self.gen)
        starts = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].numpy()
        windows = torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict:
        state = {"generator": self.gen.get_state(), "global_batch": self.batch_size * self.world_size}
        return state if self.draw is None else state | {"positions": self.draw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        # same global batch size (any world size) after the restore: the same batches as the original run
        self.gen.set_state(state["generator"])
        if self.draw is not None and "positions" in state:
            self.draw.load_state_dict(state["positions"])


class BatchSource(Protocol):
    """What train() draws batches from: (x, y), y = -100 where no loss is wanted (F.cross_entropy's
    ignore_index), and a state for exact resume. BatchSampler is one (train() makes it from the corpus);
    one handed to train() also says what it is (describe(): config.json's "data"), as task_data.TaskSampler does."""

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]: ...
    def next_positions(self) -> torch.Tensor | None: ...  # the last batch's position ids; None: 0..T-1
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def describe(self) -> dict: ...
