"""Tokenizers: a sentencepiece BPE model trained on a corpus's train split, or raw UTF-8 bytes."""

from __future__ import annotations

import io
import itertools
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from ..errors import PosbenchError
from ..fileio import atomic_write

SPM_SAMPLE_CHARS = 50_000_000  # big corpora train the tokenizer on a seeded sample of lines this large
SPM_SAMPLE_LINES = 1_000_000  # ... and of at most this many lines (sentencepiece's own shuffled sample)
ENCODE_CHUNK = 1 << 20  # characters per sentencepiece batch call, bounds memory on huge corpora
# With few cores, encoding each distinct word once beats sentencepiece on whole lines (measured ~3-4x on 2
# cores); with many, sentencepiece's own threads win (~3 MB/s per core against ~15 MB/s for the one-core
# word path: an estimate, the crossover was not measured on a big machine). Both give the same ids.
WORD_PATH_MAX_THREADS = 4
# A BPE piece never spans the start of a run of spaces that follows a non-space: with split_by_whitespace
# (the default) sentencepiece only lets "▁" open a piece or fill a whitespace-only one. So a text's ids
# are the concatenation of the ids of these words ("\n" and a literal "▁" are words of their own).
WORD = re.compile("\n|\u2581| +[^ \n\u2581]*|[^ \n\u2581]+")



class _WordIds:
    """The ids of every distinct word met so far, packed: word k's are flat[starts[k]:starts[k] + lengths[k]]."""

    def __init__(self) -> None:
        self.index: dict[str, int] = {}
        self.flat = np.zeros(1 << 16, dtype=np.int32)
        self.starts = np.zeros(1 << 12, dtype=np.int64)
        self.lengths = np.zeros(1 << 12, dtype=np.int64)
        self.used = 0  # of flat

    @staticmethod
    def _grow(a: np.ndarray, n: int) -> np.ndarray:
        if n <= len(a):
            return a
        b = np.zeros(max(n, 2 * len(a)), dtype=a.dtype)  # doubling: appending stays linear overall
        b[:len(a)] = a
        return b

    def add(self, first: int, encoded: list[list[int]]) -> None:
        """Record the ids of words first, first + 1, ... (already numbered in `index`)."""
        lengths = np.fromiter(map(len, encoded), dtype=np.int64, count=len(encoded))
        total, end = int(lengths.sum()), first + len(encoded)
        self.starts, self.lengths = self._grow(self.starts, end), self._grow(self.lengths, end)
        self.flat = self._grow(self.flat, self.used + total)
        self.lengths[first:end] = lengths
        self.starts[first:end] = self.used + np.cumsum(lengths) - lengths
        self.flat[self.used:self.used + total] = np.fromiter(itertools.chain.from_iterable(encoded), dtype=np.int32,
                                                             count=total)
        self.used += total


def _threads() -> int:
    """Every core this process may run on (the affinity mask, which containers and taskset narrow)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


class Tokenizer:
    """Either a sentencepiece BPE model (kind "bpe") or raw UTF-8 bytes (kind "bytes", vocab 256)."""

    def __init__(self, kind: str, model_proto: bytes | None = None) -> None:
        self.kind = kind
        self.model_proto = model_proto
        if kind == "bytes":
            self.sp = None
            self.vocab_size = 256
            self.token_bytes = np.ones(256, dtype=np.int64)
            return
        if kind != "bpe":
            raise PosbenchError(f"Unknown tokenizer kind {kind!r}: use bpe or bytes.")
        if model_proto is None:
            raise PosbenchError("A bpe tokenizer needs its sentencepiece model (use train_tokenizer or load).")
        self.sp = spm.SentencePieceProcessor(model_proto=model_proto)
        self.vocab_size = self.sp.get_piece_size()
        pieces = [self.sp.id_to_piece(i) for i in range(self.vocab_size)]
        self.token_bytes = np.array([
            0 if self.sp.is_control(i) or self.sp.is_unknown(i)
            else 1 if self.sp.is_byte(i)
            else len(p.replace("\u2581", " ").encode())
            for i, p in enumerate(pieces)
        ], dtype=np.int64)
        # sentencepiece never sees these two: "\n" is a fixed piece, and a literal "▁" in the text would
        # decode as a space, so it is written as its three byte-fallback pieces to keep decode(encode(t)) == t
        self._fixed = {"\n": [self.sp.piece_to_id("\n")],
                       "\u2581": [self.sp.piece_to_id(f"<0x{b:02X}>") for b in "\u2581".encode()]}

    def encode(self, text: str) -> np.ndarray:
        """Token ids (int32) of `text`, no BOS/EOS."""
        out = list(self.encode_chunks(text))
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)

    def encode_chunks(self, text: str) -> Iterator[np.ndarray]:
        """The ids of `text` (int32) in pieces that concatenate to encode(text): a huge corpus is written
        to disk chunk by chunk instead of being held as one array."""
        threads = _threads()
        words = _WordIds() if threads <= WORD_PATH_MAX_THREADS else None  # shared by the chunks of one text
        start = 0
        while start < len(text):  # chunks end at a newline, so their ids concatenate to the whole text's
            end = text.find("\n", start + ENCODE_CHUNK)
            end = len(text) if end == -1 else end + 1
            if self.sp is None:
                yield np.frombuffer(text[start:end].encode(), dtype=np.uint8).astype(np.int32)
            elif words is not None:
                yield self._encode_words(text[start:end], words, threads)
            else:
                parts = re.split("(\n|\u2581)", text[start:end])  # segments at even indices, separators at odd
                pieces: list[list[int]] = [[]] * len(parts)
                pieces[0::2] = self.sp.encode(parts[0::2], num_threads=threads)  # one batch: all cores
                pieces[1::2] = [self._fixed[sep] for sep in parts[1::2]]
                count = sum(map(len, pieces))
                yield np.fromiter(itertools.chain.from_iterable(pieces), dtype=np.int32, count=count)
            start = end

    def _encode_words(self, text: str, table: _WordIds, threads: int) -> np.ndarray:
        """encode(text) through `table`: sentencepiece only sees the words it has not seen before."""
        words = WORD.findall(text)
        index, known = table.index, len(table.index)
        numbers = np.fromiter((index.setdefault(w, len(index)) for w in words), dtype=np.int64, count=len(words))
        if len(index) > known:
            new = list(itertools.islice(reversed(index), len(index) - known))[::-1]  # dicts keep insertion order
            plain = [w for w in new if w not in self._fixed]
            got = dict(zip(plain, self.sp.encode(plain, num_threads=threads), strict=True))
            table.add(known, [self._fixed[w] if w in self._fixed else got[w] for w in new])
        lengths = table.lengths[numbers]
        ends = np.cumsum(lengths)
        # output position j of word i reads flat[starts[i] + j - (ends[i] - lengths[i])]
        pos = np.repeat(table.starts[numbers] - (ends - lengths), lengths) + np.arange(ends[-1] if len(ends) else 0)
        return table.flat[pos]

    def decode(self, ids: np.ndarray | torch.Tensor | list[int]) -> str:
        ids = np.asarray(ids.cpu() if isinstance(ids, torch.Tensor) else ids, dtype=np.int64).ravel()
        if ids.size and (ids.min() < 0 or ids.max() >= self.vocab_size):
            raise PosbenchError(f"Token id out of range for a vocabulary of {self.vocab_size}.")
        if self.sp is None:
            return ids.astype(np.uint8).tobytes().decode("utf-8", errors="replace")
        return self.sp.decode(ids.tolist())

    def save(self, folder: Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        if self.sp is None:
            atomic_write(folder / "tokenizer.json", json.dumps(self.describe()).encode())
        else:
            atomic_write(folder / "tokenizer.model", self.model_proto)

    @classmethod
    def load(cls, folder: Path) -> Tokenizer:
        folder = Path(folder)
        if (folder / "tokenizer.model").exists():
            try:
                return cls("bpe", (folder / "tokenizer.model").read_bytes())
            except RuntimeError:
                raise PosbenchError(f"{folder}/tokenizer.model is not a valid sentencepiece model.") from None
        if (folder / "tokenizer.json").exists():
            return cls(json.loads((folder / "tokenizer.json").read_text())["kind"])
        raise PosbenchError(f"No tokenizer.model or tokenizer.json in {folder}.")

    def describe(self) -> dict:
        return {"kind": self.kind, "vocab_size": self.vocab_size}


def train_tokenizer(text: str, kind: str = "bpe", vocab_size: int = 4096, seed: int = 0) -> Tokenizer:
    """Train a tokenizer on `text` (the training split). `bytes` needs no training and ignores vocab_size."""
    if kind == "bytes":
        return Tokenizer("bytes")
    if kind != "bpe":
        raise PosbenchError(f"Unknown tokenizer kind {kind!r}: use bpe or bytes.")
    if not text.strip():
        raise PosbenchError("Cannot train a tokenizer on empty text.")
    lines = [line for line in text.split("\n") if line.strip()]
    sizes = np.fromiter(map(len, lines), dtype=np.int64, count=len(lines))
    if sizes.sum() > SPM_SAMPLE_CHARS:
        # BPE training time grows with its input, not with the corpus: a seeded random sample of lines
        # (kept in corpus order) is enough for the merges of a big corpus; small ones are used whole
        order = np.random.default_rng(seed).permutation(len(lines))
        keep = np.sort(order[:int(np.searchsorted(np.cumsum(sizes[order]), SPM_SAMPLE_CHARS)) + 1])
        lines = [lines[i] for i in keep]
    spm.set_random_generator_seed(seed % 2**31)  # drives the line sample on big corpora (2**32-1 = "random")
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=model, model_type="bpe", vocab_size=vocab_size,
            byte_fallback=True, normalization_rule_name="identity", remove_extra_whitespaces=False,
            add_dummy_prefix=False, user_defined_symbols=["\n"], allow_whitespace_only_pieces=True,
            input_sentence_size=SPM_SAMPLE_LINES, shuffle_input_sentence=True, max_sentence_length=1 << 16,
            num_threads=1, minloglevel=2,  # one thread: same merges on every machine
        )
    except RuntimeError as e:
        msg = str(e)
        if m := re.search(r"Vocabulary size too high \((\d+)\).*<= (\d+)", msg):
            raise PosbenchError(
                f"vocab_size {m[1]} is too large for this corpus: the most that fits is {m[2]}.") from None
        if m := re.search(r"smaller than required_chars\. (\d+) vs (\d+)", msg):
            raise PosbenchError(f"vocab_size {m[1]} is too small for this corpus: it needs at least {m[2]} "
                                "(256 byte pieces, control pieces and the corpus's characters).") from None
        raise PosbenchError(f"sentencepiece failed to train: {msg.splitlines()[0]}") from None
    return Tokenizer("bpe", model.getvalue())
