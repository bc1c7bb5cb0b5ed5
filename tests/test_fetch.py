"""Named corpora over a loopback HTTP server: verified, resumed, unpacked, then loaded offline; hf:DATASET;
the `posbench data` commands; the sampled tokenizer training of big corpora."""

import hashlib
import io
import random
import re
import socket
import sys
import threading
import types
import zipfile
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pytest

from posbench.cli import data as cli_data
from posbench.common import SPLITS, data_dir
from posbench.data import fetch
from posbench.data import tokenizer as tokenizer_module
from posbench.data.corpora import load_corpus
from posbench.data.fetch import SOURCES
from posbench.data.tokenizer import train_tokenizer
from posbench.data.tokens import prepare_data
from posbench.errors import PosbenchError

from .helpers import run_cli

ARCHIVE = SOURCES["wikitext-2"].archive


class Mirror:
    """Files served from 127.0.0.1 with HTTP Range support. A name in `drop_first` gets half its body on
    the first request and then the connection is closed; `ignore_range` answers every request in full."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.drop_first: set[str] = set()
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []  # (name, Range header)
        mirror = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                name = self.path.lstrip("/")
                mirror.requests.append((name, self.headers.get("Range")))
                body = mirror.files.get(name)
                if body is None:
                    self.send_error(404)
                    return
                size, start = len(body), 0
                if (asked := self.headers.get("Range")) and not mirror.ignore_range:
                    start = int(re.fullmatch(r"bytes=(\d+)-", asked)[1])
                    if start >= size:
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{size}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{size - 1}/{size}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(size - start))
                self.send_header("Accept-Ranges", "bytes")
                self.end_headers()
                if name in mirror.drop_first:
                    mirror.drop_first.discard(name)
                    self.wfile.write(body[start:start + (size - start) // 2])
                    self.wfile.flush()
                    self.connection.shutdown(socket.SHUT_RDWR)  # the client sees the body end early
                    self.close_connection = True
                    return
                self.wfile.write(body[start:])

        class Server(ThreadingHTTPServer):
            def handle_error(self, request, client_address) -> None:
                pass  # the deliberately dropped connection fails to flush; that is the point

        self.server = Server(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def wikitext_zip() -> tuple[bytes, dict[str, str]]:
    """A small archive laid out like wikitext-2-raw-v1.zip, and the text of each split."""
    rng = random.Random(0)
    words = "the valkyria chronicles game was released in japan and europe café 日本 naïve".split()
    texts = {}
    for split, n in (("train", 300), ("valid", 30), ("test", 30)):
        texts[split] = "".join(f" \n = Section {split} {i} = \n \n "
                               + " ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) + " \n"
                               for i in range(n))
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        for split, text in texts.items():
            z.writestr(f"wikitext-2-raw/wiki.{split}.raw", text)
    return buf.getvalue(), texts


def sha256(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@pytest.fixture(autouse=True)
def _own_data_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("POSBENCH_DATA", str(tmp_path / "corpora"))  # the session-wide cache would leak fetches


@pytest.fixture
def mirror():
    m = Mirror()
    yield m
    m.stop()


@pytest.fixture
def wikitext2(mirror, monkeypatch):
    """The test archive served as wikitext-2 through POSBENCH_MIRROR, with its own checksum and size."""
    archive, texts = wikitext_zip()
    mirror.files[ARCHIVE] = archive
    monkeypatch.setenv("POSBENCH_MIRROR", mirror.url)
    monkeypatch.setitem(SOURCES, "wikitext-2", replace(SOURCES["wikitext-2"], checksum=sha256(archive),
                                                       size=len(archive)))
    return archive, texts


def get(name: str = "wikitext-2", **kwargs) -> fetch.FetchResult:
    return fetch.fetch(name, progress=False, backoff=0, **kwargs)


def nothing_final(folder) -> bool:
    """No split, no marker and no archive under its final name (a .part may remain)."""
    names = {p.name for p in folder.rglob("*")} if folder.exists() else set()
    return not names & {"train.txt", "valid.txt", "test.txt", "source.json", ARCHIVE}


# ----------------------------------------------------------------------------- fetch


def test_fetch_verifies_unpacks_and_then_works_offline(wikitext2, mirror, monkeypatch):
    archive, texts = wikitext2
    result = get()
    folder = data_dir() / "wikitext-2"
    assert result.folder == folder and not result.already
    assert sorted(p.name for p in folder.iterdir()) == ["source.json", "test.txt", "train.txt", "valid.txt"]
    assert {s: (folder / f"{s}.txt").read_text(encoding="utf-8") for s in SPLITS} == texts
    info = result.info
    assert info["verified"] and info["checksum"] == sha256(archive) and info["url"] == f"{mirror.url}/{ARCHIVE}"
    assert info["bytes"] == {s: len(texts[s].encode()) for s in SPLITS}

    served = len(mirror.requests)
    assert get().already and len(mirror.requests) == served  # fetched once: no second download

    mirror.stop()  # offline from here on
    monkeypatch.setenv("POSBENCH_MIRROR", "http://127.0.0.1:9")
    corpus = load_corpus("wikitext-2")
    assert corpus.name == "wikitext-2" and corpus.splits == texts
    assert corpus.description["kind"] == "named" and corpus.description["name"] == "wikitext-2"
    prepared = prepare_data("wikitext-2", "bytes")
    assert all(prepared.tokenizer.decode(prepared.splits[s]) == texts[s] for s in SPLITS)


@pytest.mark.parametrize("wrong", ["checksum", "size"])
def test_a_mismatch_is_refused_and_nothing_is_kept(wikitext2, monkeypatch, wrong):
    archive, _ = wikitext2
    bad = {"checksum": sha256(archive + b"x")} if wrong == "checksum" else {"size": len(archive) + 1}
    monkeypatch.setitem(SOURCES, "wikitext-2", replace(SOURCES["wikitext-2"], **bad))
    expected = "sha256 mismatch" if wrong == "checksum" else "the published file has"
    with pytest.raises(PosbenchError, match=expected):
        get(retries=0)
    folder = data_dir() / "wikitext-2"
    assert nothing_final(folder) and not list(folder.rglob("*.part"))
    with pytest.raises(PosbenchError, match="posbench data fetch wikitext-2"):
        load_corpus("wikitext-2")


def test_a_dropped_connection_is_resumed_with_a_range_request(wikitext2, mirror):
    archive, texts = wikitext2
    mirror.drop_first.add(ARCHIVE)
    get(retries=1)
    half = len(archive) // 2
    assert mirror.requests == [(ARCHIVE, None), (ARCHIVE, f"bytes={half}-")]
    assert load_corpus("wikitext-2").splits == texts  # the checksum passed on the joined halves


def test_an_interrupted_fetch_resumes_on_the_next_run(wikitext2, mirror):
    archive, texts = wikitext2
    mirror.drop_first.add(ARCHIVE)
    with pytest.raises(PosbenchError, match="run the same command again to resume"):
        get(retries=0)
    folder = data_dir() / "wikitext-2"
    part = folder / fetch.DOWNLOAD / f"{ARCHIVE}.part"
    assert part.read_bytes() == archive[:len(archive) // 2]
    assert nothing_final(folder)
    get(retries=0)
    assert mirror.requests[-1] == (ARCHIVE, f"bytes={len(archive) // 2}-")
    assert load_corpus("wikitext-2").splits == texts and not part.exists()


def test_a_server_ignoring_range_gets_a_fresh_download(wikitext2, mirror):
    _, texts = wikitext2
    mirror.drop_first.add(ARCHIVE)
    mirror.ignore_range = True  # answers 200 with the whole file: the partial one must not be appended to
    get(retries=1)
    assert load_corpus("wikitext-2").splits == texts


def test_the_next_url_is_tried_when_one_fails(wikitext2, mirror, monkeypatch):
    monkeypatch.delenv("POSBENCH_MIRROR")
    urls = (f"{mirror.url}/gone/{ARCHIVE}", f"{mirror.url}/{ARCHIVE}")
    monkeypatch.setitem(SOURCES, "wikitext-2", replace(SOURCES["wikitext-2"], urls=urls))
    assert get().info["url"] == urls[1]


def test_enwik8_is_cut_90_5_5_at_character_boundaries(mirror, monkeypatch):
    text = "a" * 1799 + "é" + "b" * 199  # 2000 bytes; byte 1800, the 90% cut, is inside "é"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as z:
        z.writestr("enwik8", text.encode())
    mirror.files["enwik8.zip"] = buf.getvalue()
    monkeypatch.setenv("POSBENCH_MIRROR", mirror.url)
    monkeypatch.setitem(SOURCES, "enwik8", replace(SOURCES["enwik8"], checksum=sha256(buf.getvalue()),
                                                   size=len(buf.getvalue())))
    assert get("enwik8").info["cuts"] == [1799, 1900]
    splits = load_corpus("enwik8").splits
    assert splits == {"train": "a" * 1799, "valid": "é" + "b" * 99, "test": "b" * 100}


def test_a_file_without_a_published_checksum_needs_no_verify(wikitext2, mirror, monkeypatch):
    monkeypatch.setitem(SOURCES, "wikitext-2", replace(SOURCES["wikitext-2"], checksum=None))
    with pytest.raises(PosbenchError, match="--no-verify"):
        get()
    assert mirror.requests == []
    info = get(verify=False).info
    assert info["verified"] is False and info["checksum"] is None
    assert load_corpus("wikitext-2").splits == wikitext2[1]


def test_unknown_and_unfetched_names():
    with pytest.raises(PosbenchError, match="choose from wikitext-103, wikitext-2, enwik8"):
        get("wikitext-5")
    with pytest.raises(PosbenchError, match=r"run `posbench data fetch wikitext-103` once"):
        load_corpus("wikitext-103")


def test_the_recorded_checksums_are_well_formed():
    for source in SOURCES.values():
        algo, digest = source.checksum.split(":")
        assert (algo, len(digest)) == ("sha256", 64) and source.size > 0 and source.urls


# ----------------------------------------------------------------------------- hf:


class FakeSplit:
    def __init__(self, column: str, rows: list[str]) -> None:
        self.column_names, self.rows, self.column = [column], rows, column

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, key):
        return {self.column: self.rows[key]} if isinstance(key, int) else list(self.rows)


def fake_datasets(splits: dict[str, FakeSplit], calls: list) -> types.ModuleType:
    module = types.ModuleType("datasets")

    def load_dataset(name, config=None):
        calls.append((name, config))
        if name == "missing/set":
            raise FileNotFoundError("Dataset 'missing/set' doesn't exist on the Hub\nmore detail")
        return splits

    module.load_dataset = load_dataset
    return module


def test_hf_without_the_datasets_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    with pytest.raises(PosbenchError, match=re.escape("pip install 'posbench[hf]'")):
        load_corpus("hf:Salesforce/wikitext:wikitext-103-raw-v1")


def test_hf_splits_columns_and_errors(monkeypatch):
    calls = []
    rows = {s: [f" {s} line {i} \n" if i % 3 else "" for i in range(20)] for s in ("train", "validation", "test")}
    splits = {s: FakeSplit("text", r) for s, r in rows.items()}
    monkeypatch.setitem(sys.modules, "datasets", fake_datasets(splits, calls))
    corpus = load_corpus("hf:Salesforce/wikitext:wikitext-2-raw-v1")
    assert calls == [("Salesforce/wikitext", "wikitext-2-raw-v1")]
    assert corpus.splits["valid"] == "".join(r or "\n" for r in rows["validation"])
    assert corpus.description["kind"] == "hf" and corpus.description["files"]["valid"] == "validation"

    del splits["test"], splits["validation"]  # train only, in a column not named text: split 90/5/5
    splits["train"] = FakeSplit("content", [f"document {i}" for i in range(200)])
    corpus = load_corpus("hf:some/set")
    assert calls[-1] == ("some/set", None) and corpus.description["split"] == "90/5/5"
    assert "".join(corpus.splits[s] for s in SPLITS) == "".join(f"document {i}\n" for i in range(200))

    with pytest.raises(PosbenchError, match="Cannot load Hugging Face dataset missing/set: .*doesn't exist"):
        load_corpus("hf:missing/set")
    with pytest.raises(PosbenchError, match="needs a dataset name"):
        load_corpus("hf:")


# ----------------------------------------------------------------------------- CLI


def test_data_commands(wikitext2, capsys, monkeypatch):
    _, texts = wikitext2
    monkeypatch.setattr(cli_data, "BUILTINS", ("stdlib",))  # pydocs takes seconds to build; stdlib does not
    code, out, err = run_cli(["data", "list"], capsys, monkeypatch)
    assert code == 0 and re.search(r"wikitext-2 .*not fetched", out), out + err

    code, out, err = run_cli(["data", "fetch", "wikitext-2"], capsys, monkeypatch)
    assert code == 0 and "fetched wikitext-2" in out and "verified" in out, out + err
    code, out, _ = run_cli(["data", "fetch", "wikitext-2"], capsys, monkeypatch)
    assert "already fetched" in out

    code, out, _ = run_cli(["data", "list"], capsys, monkeypatch)
    assert code == 0 and re.search(r"wikitext-2 .* fetched", out) and "stdlib" in out

    code, out, err = run_cli(["data", "info", "--data", "wikitext-2", "--tokenizer", "bytes"], capsys, monkeypatch)
    assert code == 0, out + err
    train_bytes = len(texts["train"].encode())
    assert re.search(rf"train .*{len(texts['train']):,} .*{train_bytes:,} .*{train_bytes:,} .*1\.000", out), out

    code, _, err = run_cli(["data", "fetch", "wikitext-5"], capsys, monkeypatch)
    assert code == 2 and "Unknown corpus 'wikitext-5'" in err and "Traceback" not in err


# ----------------------------------------------------------------------------- tokenizer sample


def test_big_corpora_train_the_tokenizer_on_a_seeded_sample(monkeypatch):
    rng = random.Random(1)
    words = [f"w{i}x" for i in range(300)]
    text = "\n".join(" ".join(rng.choice(words) for _ in range(12)) for _ in range(4000))
    seen = []
    real = tokenizer_module.spm.SentencePieceTrainer.train

    def spy(**kwargs):
        lines = list(kwargs["sentence_iterator"])
        seen.append(sum(map(len, lines)))
        return real(**{**kwargs, "sentence_iterator": iter(lines)})

    monkeypatch.setattr(tokenizer_module, "SPM_SAMPLE_CHARS", 20_000)
    monkeypatch.setattr(tokenizer_module.spm.SentencePieceTrainer, "train", spy)
    train_tokenizer(text, "bpe", vocab_size=400, seed=0)
    assert 20_000 <= seen[0] < 20_100  # the sample, not the 200k-character corpus

    monkeypatch.setattr(tokenizer_module.spm.SentencePieceTrainer, "train", real)
    a, b = (train_tokenizer(text, "bpe", vocab_size=400, seed=s) for s in (0, 0))
    assert a.model_proto == b.model_proto  # seeded: the same sample and merges every time
    ids = a.encode(text)
    assert a.decode(ids) == text and np.all(ids < 400)


# ----------------------------------------------------------------------------- encoding paths


def test_the_word_path_and_the_line_path_give_the_same_ids(monkeypatch):
    stdlib = load_corpus("stdlib").splits["valid"]  # code: indentation runs, tabs, punctuation, unicode
    tok = train_tokenizer(stdlib, "bpe", vocab_size=1000)
    texts = [stdlib, "", "\n", "  two  spaces,\ttabs\t\tand\n\n\nnewlines  \n", " lead and trail ",
             "non-ASCII: é, 日本語, 🐍, a literal ▁ block ▁▁ and ▁ ▁", "a ▁b", "crlf\r\nends\r\n", "   "]

    def ids(max_threads: int, chunk: int) -> list[np.ndarray]:
        monkeypatch.setattr(tokenizer_module, "WORD_PATH_MAX_THREADS", max_threads)
        monkeypatch.setattr(tokenizer_module, "ENCODE_CHUNK", chunk)
        return [tok.encode(t) for t in texts]

    lines = ids(0, 1 << 20)  # sentencepiece on whole lines
    for words in (ids(1 << 10, 1 << 20), ids(1 << 10, 500)):  # each distinct word once, across chunks
        assert all(np.array_equal(a, b) for a, b in zip(lines, words, strict=True))
    assert all(tok.decode(a) == t for a, t in zip(lines, texts, strict=True))
