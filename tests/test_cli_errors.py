"""Bad input: one clear line on stderr, exit code 2, no traceback, nothing lost (README troubleshooting)."""

import json
import sys

import pytest

from posbench import cli
from posbench.errors import PosbenchError
from posbench.train import train

from .helpers import run_cli, tiny_train, write_corpus

TINY = ["--layers", "1", "--heads", "2", "--dim", "16", "--tokenizer", "bytes", "--seq-len", "16",
        "--batch-size", "2", "--steps", "2", "--device", "cpu"]


def assert_clear_error(args, expected, capsys, monkeypatch):
    code, _, err = run_cli(args, capsys, monkeypatch)
    assert code == 2, err
    assert "Traceback" not in err
    assert expected in err, err
    return err


@pytest.fixture
def finished_run(tmp_path):
    model_cfg, cfg = tiny_train(write_corpus(tmp_path))
    return train(model_cfg, cfg, out=tmp_path / "run", show_progress=False).run_dir


def test_missing_data_path(capsys, monkeypatch, tmp_path):
    err = assert_clear_error(["train", "--data", str(tmp_path / "nope.txt"), *TINY], "does not exist",
                             capsys, monkeypatch)
    assert err.count("\n") == 1, "one line"
    assert not (tmp_path / "runs").exists()


def test_empty_corpus(capsys, monkeypatch, tmp_path):
    (tmp_path / "empty.txt").write_text("  \n\n")
    assert_clear_error(["train", "--data", str(tmp_path / "empty.txt"), *TINY], "is empty", capsys, monkeypatch)


def test_binary_file(capsys, monkeypatch, tmp_path):
    (tmp_path / "blob.txt").write_bytes(bytes(range(256)) * 40)
    assert_clear_error(["train", "--data", str(tmp_path / "blob.txt"), *TINY], "binary", capsys, monkeypatch)


def test_corpus_shorter_than_a_window(capsys, monkeypatch, tmp_path):
    (tmp_path / "short.txt").write_text("\n".join(["a few words"] * 40))
    out = tmp_path / "run"
    args = ["train", "--data", str(tmp_path / "short.txt"), *TINY, "--seq-len", "4096", "--out", str(out)]
    assert_clear_error(args, "too few for a window of 4096", capsys, monkeypatch)
    assert not out.exists(), "nothing written for bad input"


@pytest.mark.parametrize("flag,value,expected", [
    ("--seq-len", "0", "--train-len must be positive"),
    ("--steps", "-3", "--steps must be positive"),
    ("--steps", "ten", "Invalid value for '--steps'"),
    ("--pos", "alibbi", "did you mean 'alibi'"),
    ("--device", "cuda", "no CUDA device"),
])
def test_bad_flag_values(flag, value, expected, capsys, monkeypatch, corpus):
    assert_clear_error(["train", "--data", corpus, *TINY, flag, value], expected, capsys, monkeypatch)


def test_vocab_size_too_large(capsys, monkeypatch, corpus):
    args = ["train", "--data", corpus, *TINY, "--tokenizer", "bpe", "--vocab-size", "60000"]
    assert_clear_error(args, "too large for this corpus", capsys, monkeypatch)


def test_run_folder_missing_or_not_a_run(capsys, monkeypatch, tmp_path):
    assert_clear_error(["train", "--resume", str(tmp_path / "nope")], "does not exist", capsys, monkeypatch)
    (tmp_path / "stuff").mkdir()
    assert_clear_error(["train", "--resume", str(tmp_path / "stuff")], "not a posbench run", capsys, monkeypatch)


def test_truncated_weights(finished_run):
    from posbench import load_run

    weights = finished_run / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(PosbenchError, match="truncated or corrupt"):
        load_run(finished_run)


def test_config_from_a_newer_posbench(finished_run, capsys, monkeypatch):
    config = json.loads((finished_run / "config.json").read_text())
    config.update(format=99, posbench_version="9.0.0")
    (finished_run / "config.json").write_text(json.dumps(config))
    assert_clear_error(["train", "--resume", str(finished_run)], "posbench 9.0.0, newer", capsys, monkeypatch)


def test_different_config_in_out_folder_is_refused(finished_run, capsys, monkeypatch, tmp_path):
    before = (finished_run / "model.safetensors").read_bytes()
    corpus = json.loads((finished_run / "config.json").read_text())["train"]["data"]
    args = ["train", "--data", corpus, *TINY, "--lr", "0.5", "--out", str(finished_run)]
    assert_clear_error(args, "--overwrite", capsys, monkeypatch)
    assert (finished_run / "model.safetensors").read_bytes() == before


def test_debug_env_shows_the_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("POSBENCH_DEBUG", "1")
    monkeypatch.setattr(sys, "argv", ["posbench", "train", "--data", str(tmp_path / "nope.txt")])
    with pytest.raises(PosbenchError, match="does not exist"):
        cli.main()


def test_error_text_with_brackets_is_printed_verbatim(capsys, monkeypatch):
    pytest.importorskip("posbench.data.fetch")
    if __import__("importlib").util.find_spec("datasets") is not None:
        pytest.skip("datasets is installed: the missing-package message does not occur")
    assert_clear_error(["train", "--data", "hf:some/dataset", *TINY], "posbench[hf]", capsys, monkeypatch)
