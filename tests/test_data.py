import os
from pydoc_data.topics import topics

import numpy as np
import pytest
import sentencepiece as spm
import torch

from posbench import common
from posbench.common import SPLITS
from posbench.data import corpora
from posbench.data import tokenizer as tokenizer_module
from posbench.data.corpora import load_corpus
from posbench.data.tokenizer import Tokenizer, train_tokenizer
from posbench.data.tokens import BatchSampler, prepare_data
from posbench.errors import LengthError, PosbenchError
from posbench.positions import random_positions

# ~15 KB of real English prose that ships with Python: enough for a small BPE in well under a second
PROSE = "\n\n".join(topics[k] for k in ("assert", "if", "while", "for", "try", "with"))
TRICKY = [
    "",
    "\n",
    "plain words",
    "  two  spaces,\ttabs\t\tand\n\n\nnewlines  \n",
    " leading space and trailing space ",
    "non-ASCII: é, ü, 日本語, emoji 🐍, and a literal ▁ block",
    "windows\r\nline\r\nends",
    "while x:\n    if x > 0:\n        x -= 1\n",
]


@pytest.fixture(scope="module")
def bpe():
    return train_tokenizer(PROSE, "bpe", vocab_size=400)


@pytest.fixture(scope="module")
def pydocs():
    return load_corpus("pydocs")


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


# ----------------------------------------------------------------------------- tokenizers


@pytest.mark.parametrize("text", TRICKY + [PROSE])
def test_bpe_roundtrip_and_token_bytes(bpe, text):
    ids = bpe.encode(text)
    assert ids.ndim == 1 and (ids >= 0).all() and (ids < bpe.vocab_size).all()
    assert bpe.decode(ids) == text
    assert bpe.token_bytes[ids].sum() == len(text.encode())


def test_bpe_is_trained_and_compresses(bpe):
    assert bpe.kind == "bpe" and bpe.vocab_size == 400 and bpe.token_bytes.shape == (400,)
    assert len(PROSE.encode()) / len(bpe.encode(PROSE)) > 1.5  # ~60 merges were learned, not just characters
    assert bpe.describe() == {"kind": "bpe", "vocab_size": 400}


def test_bpe_training_is_deterministic(bpe):
    assert train_tokenizer(PROSE, "bpe", vocab_size=400).model_proto == bpe.model_proto


def test_encode_in_chunks_matches_whole(bpe, monkeypatch):
    whole = bpe.encode(PROSE)
    monkeypatch.setattr(tokenizer_module, "ENCODE_CHUNK", 100)
    assert np.array_equal(bpe.encode(PROSE), whole)


@pytest.mark.parametrize("text", TRICKY)
def test_bytes_tokenizer(text):
    tok = train_tokenizer(PROSE, "bytes")
    ids = tok.encode(text)
    assert tok.vocab_size == 256 and ids.tolist() == list(text.encode())
    assert tok.decode(ids) == text and tok.decode(torch.from_numpy(ids)) == text
    assert tok.token_bytes[ids].sum() == len(text.encode())


@pytest.mark.parametrize("kind", ["bpe", "bytes"])
def test_tokenizer_save_load(bpe, kind, tmp_path):
    tok = bpe if kind == "bpe" else Tokenizer("bytes")
    tok.save(tmp_path)
    assert (tmp_path / ("tokenizer.model" if kind == "bpe" else "tokenizer.json")).exists()
    again = Tokenizer.load(tmp_path)
    assert again.describe() == tok.describe()
    assert np.array_equal(again.encode(PROSE), tok.encode(PROSE))


def test_tokenizer_errors(tmp_path):
    with pytest.raises(PosbenchError, match=r"too large .* most that fits is \d+"):
        train_tokenizer(PROSE, "bpe", vocab_size=20000)
    with pytest.raises(PosbenchError, match=r"too small .* at least \d+"):
        train_tokenizer(PROSE, "bpe", vocab_size=260)
    with pytest.raises(PosbenchError, match="bpe or bytes"):
        train_tokenizer(PROSE, "wordpiece")
    with pytest.raises(PosbenchError, match="No tokenizer"):
        Tokenizer.load(tmp_path)


# ----------------------------------------------------------------------------- corpora


def test_pydocs(pydocs):
    d = pydocs.description
    total = sum(d["bytes"].values())
    assert pydocs.name == "pydocs" and d["kind"] == "builtin"
    assert 1_500_000 < total < 3_000_000
    assert all(pydocs.splits[s].strip() for s in SPLITS)
    assert d["bytes"] == {s: len(pydocs.splits[s].encode()) for s in SPLITS}
    assert abs(d["bytes"]["train"] / total - 0.90) < 0.01
    assert abs(d["bytes"]["valid"] / total - 0.05) < 0.01
    assert "Return" in pydocs.splits["train"] and "def " not in pydocs.splits["train"][:10_000]


def test_pydocs_is_deterministic(pydocs):
    again = corpora._builtin.__wrapped__("pydocs")  # built afresh, past the per-process memo
    assert again is not pydocs
    assert again.description["sha256"] == pydocs.description["sha256"]
    assert again.splits == pydocs.splits


def test_builtin_corpus_is_built_once_per_process(monkeypatch):
    builds = []
    real = corpora._pydocs

    def counted():
        builds.append(1)
        return real()

    monkeypatch.setattr(corpora, "_pydocs", counted)
    corpora._builtin.cache_clear()
    try:
        first, second = load_corpus("pydocs"), load_corpus("pydocs")
        assert first is second and len(builds) == 1
        assert load_corpus("stdlib").name == "stdlib" and len(builds) == 1  # one entry per corpus
    finally:
        corpora._builtin.cache_clear()  # the counting wrapper must not outlive the test


def test_stdlib_is_python_source():
    c = load_corpus("stdlib")
    assert 3_000_000 < sum(c.description["bytes"].values()) < 4_500_000
    assert all("def " in c.splits[s] for s in SPLITS)


def test_text_file_splits_90_5_5_at_lines(tmp_path):
    lines = [f"line {i} of the corpus" for i in range(1000)]
    c = load_corpus(str(write(tmp_path / "c.txt", "\n".join(lines) + "\n")))
    assert c.description["kind"] == "file" and c.name == str((tmp_path / "c.txt").resolve())
    assert "".join(c.splits[s] for s in SPLITS) == "\n".join(lines) + "\n"
    assert c.splits["train"].endswith("\n") and c.splits["valid"].endswith("\n")
    assert abs(len(c.splits["train"]) / sum(map(len, c.splits.values())) - 0.9) < 0.01


def test_folder_with_split_files(tmp_path):
    for s in SPLITS:
        write(tmp_path / f"{s}.txt", f"the {s} text\n")
    c = load_corpus(str(tmp_path))
    assert c.splits == {s: f"the {s} text\n" for s in SPLITS}
    (tmp_path / "test.txt").unlink()
    assert load_corpus(str(tmp_path)).splits["test"] == "the valid text\n"  # no test.txt: test on valid


def test_folder_of_txt_files_is_concatenated_in_order(tmp_path):
    write(tmp_path / "b.txt", "B\n" * 500)
    write(tmp_path / "a.txt", "A\n" * 500)
    write(tmp_path / "notes.md", "ignored")
    c = load_corpus(str(tmp_path))
    assert "".join(c.splits.values()) == "A\n" * 500 + "B\n" * 500
    assert c.description["files"] == ["a.txt", "b.txt"]


def test_corpus_hash_tracks_content(tmp_path):
    f = write(tmp_path / "c.txt", "some text\n" * 100)
    h = load_corpus(str(f)).description["sha256"]
    assert load_corpus(str(f)).description["sha256"] == h
    write(f, "some text\n" * 101)
    assert load_corpus(str(f)).description["sha256"] != h


def test_corpus_errors(tmp_path):
    with pytest.raises(PosbenchError, match="does not exist"):
        load_corpus(str(tmp_path / "missing.txt"))
    with pytest.raises(PosbenchError, match="Unknown corpus 'wikitext'.*pydocs, stdlib"):
        load_corpus("wikitext")
    with pytest.raises(PosbenchError, match="empty"):
        load_corpus(str(write(tmp_path / "empty.txt", " \n\t\n")))
    (tmp_path / "blob.bin").write_bytes(bytes(range(256)))
    with pytest.raises(PosbenchError, match="blob.bin.*binary"):
        load_corpus(str(tmp_path / "blob.bin"))
    (tmp_path / "latin1.txt").write_bytes("café\n".encode("latin-1") * 100)
    with pytest.raises(PosbenchError, match="latin1.txt is not UTF-8"):
        load_corpus(str(tmp_path / "latin1.txt"))
    with pytest.raises(PosbenchError, match="too small to split"):
        load_corpus(str(write(tmp_path / "tiny.txt", "hi")))
    (tmp_path / "nothing").mkdir()
    with pytest.raises(PosbenchError, match="no .txt files"):
        load_corpus(str(tmp_path / "nothing"))
    write(tmp_path / "nothing" / "train.txt", "train\n")
    with pytest.raises(PosbenchError, match="no valid.txt"):
        load_corpus(str(tmp_path / "nothing"))


# ----------------------------------------------------------------------------- token cache


def test_prepare_data_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("POSBENCH_CACHE", str(tmp_path / "cache"))
    corpus = str(write(tmp_path / "prose.txt", PROSE))
    first = prepare_data(corpus, "bpe", vocab_size=400)
    assert first.tokenizer.vocab_size == 400 and first.corpus == load_corpus(corpus).description
    for s in SPLITS:
        ids = first.splits[s]
        assert isinstance(ids, np.memmap) and ids.dtype == np.uint16 and len(ids) > 0
        text = load_corpus(corpus).splits[s]
        assert first.tokenizer.decode(ids) == text
        assert first.bytes_per_token[s] == pytest.approx(len(text.encode()) / len(ids))
    folder = next((tmp_path / "cache" / "tokens").iterdir())
    expected = {"meta.json", "tokenizer.model"} | {f"{s}.bin" for s in SPLITS}
    assert {p.name for p in folder.iterdir()} == expected
    mtimes = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}

    def forbidden(*args, **kwargs):
        raise AssertionError("the cache should have been reused")

    with monkeypatch.context() as m:
        m.setattr(spm.SentencePieceTrainer, "train", forbidden)
        m.setattr(Tokenizer, "encode", forbidden)
        second = prepare_data(corpus, "bpe", vocab_size=400)
    assert {p.name: p.stat().st_mtime_ns for p in folder.iterdir()} == mtimes
    assert all(np.array_equal(first.splits[s], second.splits[s]) for s in SPLITS)
    assert second.bytes_per_token == first.bytes_per_token

    prepare_data(corpus, "bpe", vocab_size=450)  # other settings get their own folder
    assert len(list((tmp_path / "cache" / "tokens").iterdir())) == 2


def test_prepare_data_rebuilds_an_incomplete_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("POSBENCH_CACHE", str(tmp_path / "cache"))
    corpus = str(write(tmp_path / "prose.txt", PROSE))
    first = prepare_data(corpus, "bytes")
    assert first.tokenizer.kind == "bytes" and first.bytes_per_token["train"] == 1.0
    folder = next((tmp_path / "cache" / "tokens").iterdir())
    train = np.array(first.splits["train"])
    with open(folder / "train.bin", "r+b") as f:  # as if a copy was cut short
        f.truncate(10)
    assert np.array_equal(prepare_data(corpus, "bytes").splits["train"], train)
    (folder / "meta.json").unlink()  # as if killed before the cache was marked complete
    assert np.array_equal(prepare_data(corpus, "bytes").splits["train"], train)
    assert not [p for p in folder.iterdir() if p.name.endswith(".tmp")]


def test_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("POSBENCH_CACHE", str(tmp_path))
    assert common.cache_dir() == tmp_path
    monkeypatch.delenv("POSBENCH_CACHE")
    assert common.cache_dir() == common.Path(os.path.expanduser("~/.cache/posbench"))


# ----------------------------------------------------------------------------- sampler

TOKENS = np.arange(1000, dtype=np.uint16)  # token i == position i, so windows are easy to check


def test_sampler_windows():
    x, y = BatchSampler(TOKENS, length=16, batch_size=8, seed=0).next_batch()
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.int64
    assert torch.equal(y, x + 1)  # y is x shifted by one
    assert torch.equal(x, x[:, :1] + torch.arange(16))  # contiguous windows
    assert x.min() >= 0 and y.max() <= 999


def test_sampler_reaches_both_ends():
    s = BatchSampler(TOKENS[:20], length=18, batch_size=64, seed=0)  # only starts 0 and 1 fit
    x, y = s.next_batch()
    assert set(x[:, 0].tolist()) == {0, 1} and y.max() == 19


def test_sampler_is_deterministic_and_seeded():
    def draws(seed):
        s = BatchSampler(TOKENS, 16, 4, seed=seed)
        return torch.cat([s.next_batch()[0] for _ in range(3)])

    assert torch.equal(draws(1), draws(1))
    assert not torch.equal(draws(1), draws(2))


def test_sampler_state_restore():
    s = BatchSampler(TOKENS, 16, 4, seed=3)
    for _ in range(3):
        s.next_batch()
    state = s.state_dict()
    expected = [s.next_batch() for _ in range(2)]
    resumed = BatchSampler(TOKENS, 16, 4, seed=99)
    resumed.load_state_dict(state)
    for (x, y), (rx, ry) in zip(expected, [resumed.next_batch() for _ in range(2)], strict=True):
        assert torch.equal(x, rx) and torch.equal(y, ry)


def test_sampler_ddp_slices_make_the_single_process_batch():
    single = BatchSampler(TOKENS, 16, 8, seed=5)
    ranks = [BatchSampler(TOKENS, 16, 2, seed=5, rank=r, world_size=4) for r in range(4)]
    for _ in range(3):
        x, y = single.next_batch()
        parts = [r.next_batch() for r in ranks]
        assert torch.equal(x, torch.cat([p[0] for p in parts]))
        assert torch.equal(y, torch.cat([p[1] for p in parts]))


def test_sampler_resumes_under_another_world_size():
    single = BatchSampler(TOKENS, 16, 4, seed=7)
    single.next_batch()
    state = single.state_dict()
    ranks = [BatchSampler(TOKENS, 16, 2, seed=0, rank=r, world_size=2) for r in range(2)]
    for r in ranks:
        r.load_state_dict(state)
    assert torch.equal(single.next_batch()[0], torch.cat([r.next_batch()[0] for r in ranks]))


def test_sampler_reads_a_memmap(tmp_path):
    TOKENS.tofile(tmp_path / "t.bin")
    x, y = BatchSampler(np.memmap(tmp_path / "t.bin", dtype=np.uint16, mode="r"), 16, 4, seed=0).next_batch()
    assert torch.equal(y, x + 1)


def test_sampler_too_short():
    with pytest.raises(PosbenchError, match="has 10 tokens.*a window of 16"):
        BatchSampler(TOKENS[:10], 16, 4, seed=0)



def test_randomized_positions_are_sorted_distinct_within_range_and_seeded():
    """Ruoss et al. 2023: each batch a sorted subset of n distinct positions from [0, M)."""
    s = BatchSampler(TOKENS, 16, 4, seed=0, max_position=40)
    draws = [s.next_positions() for _ in range(50)]
    for ids in draws:
        assert ids.shape == (16,) and ids.dtype == torch.int64
        assert (ids[1:] > ids[:-1]).all(), "sorted and distinct"
        assert ids.min() >= 0 and ids.max() < 40
    assert len({tuple(ids.tolist()) for ids in draws}) == 50, "a fresh draw per batch"
    assert not all(torch.equal(ids, torch.arange(16)) for ids in draws)
    assert {i for ids in draws for i in ids.tolist()} == set(range(40)), "every position of [0, M) is reachable"
    again = BatchSampler(TOKENS, 16, 4, seed=0, max_position=40)
    assert all(torch.equal(ids, again.next_positions()) for ids in draws), "deterministic given the seed"
    other = BatchSampler(TOKENS, 16, 4, seed=1, max_position=40)
    assert not torch.equal(draws[0], other.next_positions())
    assert BatchSampler(TOKENS, 16, 4, seed=0).next_positions() is None  # off by default


def test_randomized_positions_leave_the_windows_alone_and_restore_with_the_sampler():
    plain, randomized = BatchSampler(TOKENS, 16, 4, seed=3), BatchSampler(TOKENS, 16, 4, seed=3, max_position=64)
    for _ in range(3):
        x, _ = plain.next_batch()
        rx, _ = randomized.next_batch()
        randomized.next_positions()
        assert torch.equal(x, rx), "a stream of their own: the same batches with the option on"
    state = randomized.state_dict()
    expected = [(randomized.next_batch()[0], randomized.next_positions()) for _ in range(2)]
    resumed = BatchSampler(TOKENS, 16, 4, seed=99, max_position=64)
    resumed.load_state_dict(state)
    for x, ids in expected:
        assert torch.equal(resumed.next_batch()[0], x) and torch.equal(resumed.next_positions(), ids)


def test_randomized_positions_need_room():
    ids = random_positions(8, 8, torch.Generator().manual_seed(0))
    assert torch.equal(ids, torch.arange(8))  # n = M: every position once
    with pytest.raises(LengthError, match=r"\[0, 8\)"):
        random_positions(9, 8, torch.Generator().manual_seed(0))
