"""`posbench compare RUN ...`: runs are seeds of one row only when their configs are equal but for the
seed; other differences make labelled rows; runs on other text or in other token units are refused."""

import json
import shutil
from dataclasses import replace

import pytest

from posbench.errors import PosbenchError
from posbench.experiments.run_groups import group_runs
from posbench.train import train

from .helpers import run_cli, tiny_train, write_corpus

ARGS = ["--max-len", "64", "--eval-tokens", "256", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("mixes")
    corpus = write_corpus(folder)
    made = {}
    for name, pos, overrides in (("alibi", "alibi", {}), ("alibi_seed1", "alibi", {"seed": 1}),
                                 ("alibi_steps8", "alibi", {"steps": 8}), ("rotary_seed1", "rotary", {"seed": 1}),
                                 ("alibi_L32", "alibi", {"train_len": 32}),
                                 ("alibi_bpe", "alibi", {"tokenizer": "bpe", "vocab_size": 300})):
        model, cfg = tiny_train(corpus, pos, **overrides)
        if "train_len" in overrides:
            model = replace(model, train_len=32)
        made[name] = folder / name
        train(model, cfg, out=made[name], show_progress=False)
    return made


def compare_runs(names, runs, tmp_path, capsys, monkeypatch):
    out = tmp_path / "out"
    code, printed, err = run_cli(["compare", *[str(runs[n]) for n in names], "--out", str(out), *ARGS],
                                 capsys, monkeypatch)
    results = json.loads((out / "results.json").read_text()) if (out / "results.json").exists() else None
    return code, printed, err, results


def test_seeds_of_one_config_form_one_row(runs):
    [(label, folders)] = group_runs([runs["alibi"], runs["alibi_seed1"]])
    assert label == "alibi" and folders == [runs["alibi"], runs["alibi_seed1"]]


def test_same_method_other_steps_are_two_labelled_rows(runs, tmp_path, capsys, monkeypatch):
    code, printed, _, results = compare_runs(["alibi", "alibi_steps8"], runs, tmp_path, capsys, monkeypatch)
    assert code in (0, None)
    assert [(r["label"], r["seeds"]) for r in results["runs"]] == [("alibi (steps 6)", [0]), ("alibi (steps 8)", [0])]
    assert "one seed per row" in printed


def test_other_training_lengths_are_rows_not_a_crash(runs, tmp_path, capsys, monkeypatch):
    code, _, err, results = compare_runs(["alibi", "alibi_L32"], runs, tmp_path, capsys, monkeypatch)
    assert code in (0, None) and "Traceback" not in err
    assert [(r["label"], r["train_len"]) for r in results["runs"]] == [("alibi (train_len 16)", 16),
                                                                      ("alibi (train_len 32)", 32)]
    assert all(r["verdict"] for r in results["runs"])


def test_two_methods_with_different_seeds_are_not_called_a_mean_over_seeds(runs, tmp_path, capsys, monkeypatch):
    code, printed, _, results = compare_runs(["alibi", "rotary_seed1"], runs, tmp_path, capsys, monkeypatch)
    assert code in (0, None)
    assert [(r["label"], r["seeds"]) for r in results["runs"]] == [("alibi", [0]), ("rotary", [1])]
    assert "one seed per row" in printed and "mean over seeds" not in printed


def test_other_token_units_are_refused_before_any_work(runs, tmp_path, capsys, monkeypatch):
    code, printed, err, results = compare_runs(["alibi", "alibi_bpe"], runs, tmp_path, capsys, monkeypatch)
    assert code == 2 and results is None and not (tmp_path / "out").exists()
    [line] = err.strip().splitlines()
    assert "their tokenizer differs (bytes vs bpe)" in line and "Traceback" not in err


def test_another_corpus_is_refused(runs, tmp_path, capsys, monkeypatch):
    other = tmp_path / "other"
    other.mkdir()
    model, cfg = tiny_train(write_corpus(other, n_lines=300))
    train(model, cfg, out=other / "run", show_progress=False)
    runs = {**runs, "other": other / "run"}
    code, _, err, _ = compare_runs(["alibi", "other"], runs, tmp_path, capsys, monkeypatch)
    assert code == 2 and "their corpus differs" in err


def test_other_steps_and_other_seed_are_still_two_rows(runs):
    groups = group_runs([runs["alibi_seed1"], runs["alibi_steps8"]])
    assert [(label, folders) for label, folders in groups] == [
        ("alibi (steps 6)", [runs["alibi_seed1"]]), ("alibi (steps 8)", [runs["alibi_steps8"]])]


def test_another_tokenizer_of_the_same_kind_is_refused(runs, tmp_path):
    """Same kind and vocabulary, other merges (a tokenizer trained on another seed): other token units."""
    twin = tmp_path / "twin"
    shutil.copytree(runs["alibi_bpe"], twin)
    (twin / "tokenizer.model").write_bytes(b"other merges")
    with pytest.raises(PosbenchError, match="their tokenizer differs"):
        group_runs([runs["alibi_bpe"], twin])
