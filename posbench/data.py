"""Corpora, tokenizers, the on-disk token cache and the training batch sampler.

Built-in corpora ship with every CPython (no download): `pydocs` is English prose (pydoc topics plus
standard-library docstrings), `stdlib` is the standard library's Python source. Named public corpora
(`wikitext-103`, `wikitext-2`, `enwik8`) are read from the data cache once `posbench data fetch NAME` has
downloaded them (see fetch.py); `hf:DATASET[:CONFIG]` reads a Hugging Face dataset. Anything else is a path
to a text file or a folder (see data/README.md).
"""

from __future__ import annotations

import ast
import gc
import hashlib
import inspect
import io
import itertools
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
FORMAT_VERSION = 2  # bump when the cache layout or the tokenizer settings change (2: sampled by characters)
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
HF_VALID = ("validation", "valid", "dev")  # names Hugging Face datasets give their validation split

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


def _load_named(name: str) -> Corpus:
    """A corpus `posbench data fetch` unpacked into the data cache: its own train/valid/test files."""
    from .fetch import MARKER, fetched_folder, get_source  # here, not at the top: fetch imports this module

    folder = fetched_folder(name)
    if folder is None:
        local = f" (for the local folder of that name, pass ./{name})" if Path(name).exists() else ""
        raise PosbenchError(f"Corpus {name} has not been fetched: run `posbench data fetch {name}` once (it needs "
                            f"the network; afterwards {name} works offline){local}.")
    info = json.loads((folder / MARKER).read_text())
    splits = {s: _read_text(folder / f"{s}.txt") for s in SPLITS}
    for split, text in splits.items():
        if not text.strip():
            raise PosbenchError(f"Corpus {name}: the {split} split in {folder} is empty; fetch it again with --force.")
    # no machine-specific fields (folder, date, mirror): a run's config compares this description
    return Corpus(name, splits, _describe("named", get_source(name).title, splits, name=name, split=info["split"],
                                          archive=info["archive"]))


def _hf_text(rows: Iterable[str | None]) -> str:
    """One row per line; rows that already end with a newline (WikiText's) are kept as they are."""
    return "".join(r if r.endswith("\n") else r + "\n" for r in rows if r is not None)


def _load_hf(spec: str) -> Corpus:
    """hf:DATASET[:CONFIG] through the optional `datasets` package: its train / validation / test splits
    (test falls back to validation; a train-only dataset is split 90/5/5), text from the `text` column or
    the first column of strings. The whole column is held in memory."""
    dataset, _, config = spec[3:].partition(":")
    if not dataset:
        raise PosbenchError("hf: needs a dataset name: --data hf:DATASET[:CONFIG], "
                            "e.g. hf:Salesforce/wikitext:wikitext-103-raw-v1.")
    try:
        import datasets
    except ImportError:
        raise PosbenchError(f"--data {spec} needs the optional Hugging Face `datasets` package: "
                            "pip install 'posbench[hf]'") from None
    try:
        ds = datasets.load_dataset(dataset, config or None)
    except Exception as e:  # network, unknown name, missing config, ...: all things the user can fix
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PosbenchError(f"Cannot load Hugging Face dataset {dataset}{f' ({config})' if config else ''}: "
                            f"{first}") from None
    names = list(ds.keys())
    if "train" not in names:
        raise PosbenchError(f"Hugging Face dataset {dataset} has no train split (it has {', '.join(names)}).")
    columns = list(ds["train"].column_names)
    first_row = ds["train"][0] if len(ds["train"]) else {}
    column = "text" if "text" in columns else next((c for c in columns if isinstance(first_row.get(c), str)), None)
    if column is None:
        raise PosbenchError(f"Hugging Face dataset {dataset} has no text column (columns: {', '.join(columns)}).")
    valid = next((n for n in HF_VALID if n in names), None)
    extra = {"dataset": dataset, "config": config or None, "column": column}
    if valid is None:
        splits = _split_text(_hf_text(ds["train"][column]), spec)
        return Corpus(spec, splits, _describe("hf", f"huggingface.co/datasets/{dataset}", splits, split="90/5/5",
                                              **extra))
    files = {"train": "train", "valid": valid, "test": "test" if "test" in names else valid}
    splits = {s: _hf_text(ds[files[s]][column]) for s in SPLITS}
    for split, text in splits.items():
        if not text.strip():
            raise PosbenchError(f"Corpus {spec}: the {split} split ({files[split]}) has no text.")
    return Corpus(spec, splits, _describe("hf", f"huggingface.co/datasets/{dataset}", splits, split="dataset",
                                          files=files, **extra))


def load_corpus(spec: str = "pydocs") -> Corpus:
    """Load a built-in corpus (`pydocs`, `stdlib`), a fetched named one (`wikitext-103`, `wikitext-2`,
    `enwik8`), a Hugging Face dataset (`hf:DATASET[:CONFIG]`), a text file, or a folder of .txt files."""
    from .fetch import SOURCES  # here, not at the top: fetch imports this module

    if spec in BUILTINS:
        text, source = _pydocs() if spec == "pydocs" else _stdlib()
        splits = _split_text(text, spec)
        return Corpus(spec, splits, _describe("builtin", source, splits, split="90/5/5"))
    if spec in SOURCES:
        return _load_named(spec)
    if spec.startswith("hf:"):
        return _load_hf(spec)

    path = Path(spec).expanduser()
    if not path.exists():
        if os.sep in spec or "/" in spec or "." in spec or spec.startswith("~"):
            raise PosbenchError(f"Corpus path {spec} does not exist.")
        raise PosbenchError(f"Unknown corpus {spec!r}: use a built-in one ({', '.join(BUILTINS)}), a named one "
                            f"({', '.join(SOURCES)}; `posbench data fetch NAME` first), hf:DATASET[:CONFIG], "
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
