"""Corpora, tokenizers, the on-disk token cache and the training batch sampler.

Built-in corpora ship with every CPython (no download): `pydocs` is English prose (pydoc topics plus
standard-library docstrings), `stdlib` is the standard library's Python source. Anything else is a path
to a text file or a folder (see data/README.md).
"""

from __future__ import annotations

import ast
import gc
import hashlib
import inspect
import io
import json
import os
import platform
import re
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sentencepiece as spm
import torch

from .errors import PosbenchError
from .fileio import atomic_write

SPLITS = ("train", "valid", "test")
BUILTINS = ("pydocs", "stdlib")
PYDOCS_CAP = 2_500_000  # bytes; stops the prose corpus growing with future Python versions
STDLIB_CAP = 4_000_000  # bytes
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
FORMAT_VERSION = 1  # bump when the cache layout or the tokenizer settings change
SPM_SAMPLE_LINES = 1_000_000  # big corpora train the tokenizer on a seeded sample of this many lines
ENCODE_CHUNK = 1 << 20  # characters per sentencepiece batch call, bounds memory on huge corpora

# ----------------------------------------------------------------------------- corpora


@dataclass
class Corpus:
    name: str  # "pydocs", "stdlib", or the resolved path
    splits: dict[str, str]  # "train"/"valid"/"test" -> text
    description: dict  # JSON-able: kind, source, bytes per split, sha256 of the corpus text


def _stdlib_files() -> tuple[Path, list[Path]]:
    """The standard library's .py files (no tests, no site-packages), in sorted relative-path order."""
    root = Path(sysconfig.get_paths()["stdlib"])
    files = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if d not in SKIP_DIRS]  # prune, don't descend
        files += [Path(folder, n) for n in names if n.endswith(".py")]
    return root, sorted(files, key=lambda p: p.relative_to(root).as_posix())


def _read_source(path: Path) -> str | None:
    try:
        return path.read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):
        return None  # a handful of odd files are not worth failing the corpus over


BLOCKS = ("body", "handlers", "orelse", "finalbody", "cases")  # fields holding statements, in source order


def _docstrings(tree: ast.Module) -> Iterator[str]:
    """Module, class and function docstrings in source order; expressions are never visited (it is slow)."""
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = ast.get_docstring(node, clean=False)
            if doc and doc.strip():
                yield inspect.cleandoc(doc).strip()  # cleandoc keeps whitespace-only last lines
        # simple statements cannot hold a def, so only nodes with a body are worth descending into
        kids = [k for f in BLOCKS for k in getattr(node, f, ()) if hasattr(k, "body")]
        stack.extend(reversed(kids))


def _capped(docs: Iterable[str], cap: int) -> list[str]:
    """The leading documents whose total size stays under `cap` bytes (deterministic, unlike sampling)."""
    out, size = [], 0
    for doc in docs:
        size += len(doc.encode()) + 2
        if size > cap:
            break
        out.append(doc)
    return out


def _pydocs() -> tuple[str, str]:
    try:
        from pydoc_data.topics import topics  # some distros strip it; docstrings alone still work
    except ImportError:
        topics = {}
    root, files = _stdlib_files()

    def docs():
        yield from (topics[k].strip() for k in sorted(topics))
        seen = set()  # "Return self." etc. repeat hundreds of times; keep the first of each
        for path in files:
            src = _read_source(path)
            try:
                tree = ast.parse(src) if src is not None else None
            except (SyntaxError, ValueError):
                tree = None
            for doc in _docstrings(tree) if tree else ():
                if doc not in seen:
                    seen.add(doc)
                    yield doc

    gc_was_on = gc.isenabled()
    gc.disable()  # ASTs hold no cycles, and the collector doubles parse time by scanning millions of nodes
    try:
        text = "\n\n".join(_capped(docs(), PYDOCS_CAP)) + "\n"
    finally:
        if gc_was_on:
            gc.enable()
    version = platform.python_version()
    return text, f"pydoc topics and docstrings of the CPython {version} standard library ({root})"


def _stdlib() -> tuple[str, str]:
    root, files = _stdlib_files()
    # encodings/ is 1.4 MB of generated codec tables: left in, they would be most of the test split
    files = [f for f in files if f.relative_to(root).parts[0] != "encodings"]
    sources = (s if s.endswith("\n") else s + "\n" for s in map(_read_source, files) if s and s.strip())
    text = "\n".join(_capped(sources, STDLIB_CAP))
    return text, f"source of the CPython {platform.python_version()} standard library ({root})"


def _read_text(path: Path) -> str:
    data = path.read_bytes()
    if b"\x00" in data:
        raise PosbenchError(f"{path} looks like a binary file, not UTF-8 text.")
    try:
        return data.decode("utf-8-sig")  # -sig: drop a BOM some editors add
    except UnicodeDecodeError as e:
        raise PosbenchError(f"{path} is not UTF-8 text (bad byte at offset {e.start}).") from None


def _split_text(text: str, name: str) -> dict[str, str]:
    """First 90% of the characters train, next 5% valid, last 5% test, cut at line starts when possible."""
    n = len(text)
    cuts = [int(n * 0.90), int(n * 0.95)]
    at_lines = [text.rfind("\n", 0, c) + 1 or c for c in cuts]  # no newline before c: cut mid-line
    c1, c2 = at_lines if 0 < at_lines[0] < at_lines[1] < n else cuts
    splits = dict(zip(SPLITS, (text[:c1], text[c1:c2], text[c2:]), strict=True))
    if any(not s.strip() for s in splits.values()):
        raise PosbenchError(f"Corpus {name} ({n} characters) is too small to split into train/valid/test.")
    return splits


def _describe(kind: str, source: str, splits: dict[str, str], **extra) -> dict:
    h = hashlib.sha256()
    for split in SPLITS:  # hash the splits, so moving a boundary changes the hash too
        data = splits[split].encode()
        h.update(f"{split}:{len(data)}:".encode() + data)
    sizes = {s: len(splits[s].encode()) for s in SPLITS}
    return {"kind": kind, "source": source, **extra, "bytes": sizes, "sha256": h.hexdigest()}


def load_corpus(spec: str = "pydocs") -> Corpus:
    """Load a built-in corpus (`pydocs`, `stdlib`), a text file, or a folder of .txt files."""
    if spec in BUILTINS:
        text, source = _pydocs() if spec == "pydocs" else _stdlib()
        splits = _split_text(text, spec)
        return Corpus(spec, splits, _describe("builtin", source, splits, split="90/5/5"))

    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or "/" in spec or "." in spec or spec.startswith("~"):
            raise PosbenchError(f"Corpus path {spec} does not exist.")
        raise PosbenchError(f"Unknown corpus {spec!r}: use a built-in one ({', '.join(BUILTINS)}) "
                            "or a path to a .txt file or folder.")
    path = path.resolve()
    name = str(path)

    if path.is_dir() and (path / "train.txt").exists():
        if not (path / "valid.txt").exists():
            raise PosbenchError(f"{path} has train.txt but no valid.txt.")
        test = "test.txt" if (path / "test.txt").exists() else "valid.txt"  # no test.txt: test on valid
        files = dict(zip(SPLITS, ("train.txt", "valid.txt", test), strict=True))
        splits = {s: _read_text(path / f) for s, f in files.items()}
        for split, text in splits.items():
            if not text.strip():
                raise PosbenchError(f"Corpus {name}: the {split} split ({files[split]}) is empty.")
        return Corpus(name, splits, _describe("folder", name, splits, split="files", files=files))

    if path.is_dir():
        files = sorted(path.glob("*.txt"))
        if not files:
            hint = " (rename WikiText's wiki.*.tokens to train.txt/valid.txt/test.txt)" if any(
                path.glob("wiki.*")) else ""
            raise PosbenchError(f"Folder {path} has no .txt files{hint}.")
        texts = [_read_text(f) for f in files]
        text = "".join(t if t.endswith("\n") else t + "\n" for t in texts)
        kind, extra = "folder", {"files": [f.name for f in files]}
    else:
        text, kind, extra = _read_text(path), "file", {}
    if not text.strip():
        raise PosbenchError(f"Corpus {name} is empty.")
    splits = _split_text(text, name)
    return Corpus(name, splits, _describe(kind, name, splits, split="90/5/5", **extra))


# ----------------------------------------------------------------------------- tokenizers


def _threads() -> int:
    return max(1, min(8, os.cpu_count() or 1))


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
        if self.sp is None:
            return np.frombuffer(text.encode(), dtype=np.uint8).astype(np.int32)
        out, start = [], 0
        while start < len(text):  # chunks end at a newline, so their ids concatenate to the whole text's
            end = text.find("\n", start + ENCODE_CHUNK)
            end = len(text) if end == -1 else end + 1
            parts = re.split("(\n|\u2581)", text[start:end])  # segments at even indices, separators at odd
            flat = []
            for i, ids in enumerate(self.sp.encode(parts[0::2], num_threads=_threads())):
                flat += ids
                if 2 * i + 1 < len(parts):
                    flat += self._fixed[parts[2 * i + 1]]
            out.append(np.array(flat, dtype=np.int32))
            start = end
        return np.concatenate(out) if out else np.zeros(0, dtype=np.int32)

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
    lines = (line for line in text.split("\n") if line.strip())
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


# ----------------------------------------------------------------------------- token cache


def cache_dir() -> Path:
    return Path(os.environ.get("POSBENCH_CACHE") or "~/.cache/posbench").expanduser()


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
    if tokenizer == "bytes":
        vocab_size, seed = 256, 0  # neither changes a byte tokenizer, so they must not split the cache
    corpus = load_corpus(spec)
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
        ids = tok.encode(corpus.splits[s])
        atomic_write(folder / f"{s}.bin", ids.astype(dtype).tobytes())
        counts[s] = int(ids.size)
        bpt[s] = len(corpus.splits[s].encode()) / max(1, ids.size)
    tok.save(folder)
    meta = {"settings": settings, "corpus": corpus.description, "tokenizer": tok.describe(),
            "dtype": dtype.str, "tokens": counts, "bytes_per_token": bpt}
    atomic_write(folder / "meta.json", json.dumps(meta, indent=2).encode())  # last: marks the cache complete
    data = _load_cached(folder, corpus.description)
    assert data is not None, f"token cache {folder} was written but does not read back"
    return data


# ----------------------------------------------------------------------------- batches


class BatchSampler:
    """Random windows of seq_len+1 tokens from a token array; x = window[:-1], y = window[1:]."""

    def __init__(self, tokens: np.ndarray, seq_len: int, batch_size: int, seed: int, rank: int = 0,
                 world_size: int = 1):
        if seq_len < 1 or batch_size < 1:
            raise PosbenchError(f"seq_len and batch_size must be positive (got {seq_len} and {batch_size}).")
        if not 0 <= rank < world_size:
            raise PosbenchError(f"rank {rank} is outside world_size {world_size}.")
        if len(tokens) < seq_len + 1:
            raise PosbenchError(
                f"The split has {len(tokens)} tokens, too few for seq_len {seq_len} (needs {seq_len + 1}).")
        self.tokens, self.seq_len, self.batch_size = tokens, seq_len, batch_size
        self.rank, self.world_size = rank, world_size
        self.gen = torch.Generator().manual_seed(seed)
        self.offsets = np.arange(seq_len + 1)

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # every rank draws the same global batch and keeps its slice: N ranks see what one process would
        starts = torch.randint(0, len(self.tokens) - self.seq_len, (self.batch_size * self.world_size,),
                               generator=self.gen)
        starts = starts[self.rank * self.batch_size:(self.rank + 1) * self.batch_size].numpy()
        windows = torch.from_numpy(self.tokens[starts[:, None] + self.offsets].astype(np.int64))
        return windows[:, :-1].contiguous(), windows[:, 1:].contiguous()

    def state_dict(self) -> dict:
        return {"generator": self.gen.get_state(), "global_batch": self.batch_size * self.world_size}

    def load_state_dict(self, state: dict) -> None:
        # same global batch size (any world size) after the restore: the same batches as the original run
        self.gen.set_state(state["generator"])
