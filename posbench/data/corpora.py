"""Corpora: the text a run trains and is evaluated on, as train/valid/test strings.

Built-in corpora ship with every CPython (no download): `pydocs` is English prose (pydoc topics plus
standard-library docstrings), `stdlib` is the standard library's Python source. Named public corpora
(`wikitext-103`, `wikitext-2`, `enwik8`) are read from the data cache once `posbench data fetch NAME` has
downloaded them (see fetch.py); `hf:DATASET[:CONFIG]` reads a Hugging Face dataset. Anything else is a path
to a text file or a folder (see data/README.md).
"""

from __future__ import annotations

import ast
import functools
import gc
import hashlib
import inspect
import json
import os
import platform
import sysconfig
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from ..common import SPLITS
from ..errors import PosbenchError
from .fetch import MARKER, SOURCES, fetched_folder, get_source

BUILTINS = ("pydocs", "stdlib")
PYDOCS_CAP = 2_500_000  # bytes; stops the prose corpus growing with future Python versions
STDLIB_CAP = 4_000_000  # bytes
SKIP_DIRS = {"test", "tests", "idle_test", "site-packages", "__pycache__"}
HF_VALID = ("validation", "valid", "dev")  # names Hugging Face datasets give their validation split


@dataclass(frozen=True)
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


@functools.cache
def _builtin(spec: str) -> Corpus:
    """A built-in corpus, built once per process: pydocs parses ~700 standard-library files (about 2 s),
    and compare reads it for every run's training and again for its evaluation. The standard library
    does not change under a running interpreter, so the text (and its sha256) cannot go stale."""
    text, source = _pydocs() if spec == "pydocs" else _stdlib()
    splits = _split_text(text, spec)
    return Corpus(spec, splits, _describe("builtin", source, splits, split="90/5/5"))


def load_corpus(spec: str = "pydocs") -> Corpus:
    """Load a built-in corpus (`pydocs`, `stdlib`), a fetched named one (`wikitext-103`, `wikitext-2`,
    `enwik8`), a Hugging Face dataset (`hf:DATASET[:CONFIG]`), a text file, or a folder of .txt files."""
    if spec in BUILTINS:
        return _builtin(spec)
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
