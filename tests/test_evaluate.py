"""eval-extrapolate: windows, the length sweep, chunked attention, reports and the command."""

import csv
import json
import math
import shutil
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from typer.testing import CliRunner

import posbench.model.attention as attention_module
import posbench.model.biased_attention as biased_attention
import posbench.positions.base as base_module
from posbench.cli import app, main
from posbench.errors import PosbenchError
from posbench.evaluation.extrapolate import EvalSettings, extrapolation_report, run_report
from posbench.evaluation.scoring import (
    bits_per_byte,
    block_starts,
    evaluate_lengths,
    parse_lengths,
    position_loss,
    windows,
)
from posbench.positions import METHODS
from posbench.train import train

from .helpers import tiny_model, tiny_train, write_corpus

TOKENS = np.random.default_rng(0).integers(0, 64, 400).astype(np.uint16)
BYTES = np.random.default_rng(1).integers(1, 4, 64)  # made-up UTF-8 lengths per token id


def evaluate(model, lengths, **kw):
    return evaluate_lengths(model, TOKENS, BYTES, lengths, **kw)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Tiny trained alibi and learned runs (bytes tokenizer, L = 16) sharing one corpus."""
    folder = tmp_path_factory.mktemp("evalruns")
    with pytest.MonkeyPatch.context() as mp:  # the same cache the autouse fixture points tests at
        mp.setenv("POSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        corpus = write_corpus(folder)
        out = {"corpus": corpus}
        for pos in ("alibi", "learned"):
            model_cfg, cfg = tiny_train(corpus, pos)
            out[pos] = train(model_cfg, cfg, out=folder / pos, show_progress=False).run_dir
    return out


@pytest.mark.parametrize("mode", ["nonoverlapping", "sliding"])
@pytest.mark.parametrize(("n", "length", "stride"), [(96, 16, None), (100, 16, 5), (96, 32, 1), (40, 40, 7)])
def test_windows_score_every_prediction_once(mode, n, length, stride):
    spans = windows(n, length, mode, stride)
    scored = [i for _, end, first in spans for i in range(first, end)]
    assert scored == list(range(n))
    for k, (start, end, first) in enumerate(spans):
        assert 0 <= start <= first < end <= n and end - start <= length
        if mode == "sliding":
            assert end - start == length  # always a full window
            if k:  # later windows give every scored prediction at least length - stride of context
                assert first - start >= length - min(stride or length // 2, length)


def test_block_starts_one_in_each_stratum():
    """K blocks, one inside each K-th of the split (1000 predictions, blocks of 64, 4 of them: strata of
    250), never overlapping, the same places on every call."""
    starts = block_starts(1000, 64, 300)
    assert len(starts) == 4 and starts.tolist() == block_starts(1000, 64, 300).tolist()
    for k, s in enumerate(starts.tolist()):
        assert 250 * k <= s and s + 64 <= 250 * (k + 1)
    [one] = block_starts(1000, 64, 10)  # at least one longest window, anywhere in the split
    assert 0 <= one <= 936
    assert block_starts(256, 64, 10**6).tolist() == [0, 64, 128, 192]  # a split that holds exactly 4: side by side
    with pytest.raises(PosbenchError, match="too few for a window of 128"):
        block_starts(100, 128, 1000)


def test_block_places_are_uniform_inside_their_stratum():
    """Over 4,000 placement seeds the one block of a 1000-prediction split (longest 64) starts at each of
    its 937 places about equally often: a chi-squared over 10 bins of equal width."""
    starts = np.array([block_starts(1000, 64, 64, seed=s)[0] for s in range(4000)])
    assert starts.min() >= 0 and starts.max() <= 936
    counts = np.bincount(starts * 10 // 937, minlength=10)
    assert ((counts - 400) ** 2 / 400).sum() < 27.9  # chi-squared, 9 df, p = 0.001


def test_parse_lengths():
    assert parse_lengths("256, 128,256") == [128, 256]
    for text, message in (("128,0", "must be positive, got 0"), ("-5", "positive"), ("12x", "integers"), ("", "empty")):
        with pytest.raises(PosbenchError, match=message):
            parse_lengths(text)


def test_nonoverlapping_and_sliding_agree_when_stride_is_the_window():
    # 64 is the training length (the table size of `learned`); a stride above 32 is clamped to it
    results = evaluate(tiny_model("learned", train_len=64), [32, 64], mode="both", stride=64, max_tokens=320)
    for a, b in zip(results[:2], results[2:], strict=True):
        assert (a.mode, b.mode, a.length) == ("nonoverlapping", "sliding", b.length)
        assert a.tokens == b.tokens == 320
        assert a.loss == pytest.approx(b.loss, abs=1e-6) and a.bpb == pytest.approx(b.bpb, abs=1e-6)


def hand_loss(model, spans):
    """Summed cross-entropy of each span's scored predictions, one window at a time."""
    x = torch.from_numpy(TOKENS.astype(np.int64))
    total = 0.0
    for start, end, first in spans:
        logits = model(x[start:end][None])[0]
        total += F.cross_entropy(logits[first - start :], x[first + 1 : end + 1], reduction="sum").item()
    return total


def test_perplexity_matches_a_hand_computation():
    """Three blocks of 48 predictions, one in each third of the 399 the text holds, each scored as a text
    of its own: windows of 16 side by side, or sliding windows of 16 with stride 8."""
    model = tiny_model("rotary")
    starts = block_starts(399, 48, 150).tolist()
    assert [s // 133 for s in starts] == [0, 1, 2]
    nonoverlapping = [(b + s, b + s + 16, b + s) for b in starts for s in (0, 16, 32)]
    sliding = [span for b in starts for span in [(b, b + 16, b)] + [(b + e - 16, b + e, b + e - 8)
                                                                    for e in (24, 32, 40, 48)]]
    n = 3 * 48
    byte_count = sum(BYTES[TOKENS[b + 1 : b + 49]].sum() for b in starts)
    with torch.no_grad():
        expected = [hand_loss(model, nonoverlapping) / n, hand_loss(model, sliding) / n]
    short, _, short_sliding, _ = evaluate(model, [16, 48], mode="both", stride=8, max_tokens=150)
    for result, loss in zip((short, short_sliding), expected, strict=True):
        assert result.tokens == n
        assert result.loss == pytest.approx(loss, rel=1e-5)
        assert result.ppl == pytest.approx(math.exp(loss), rel=1e-5)
        assert result.bpb == pytest.approx(loss * n / math.log(2) / byte_count, rel=1e-5)
        assert result.windows.n_blocks == 3


BIAS_METHODS = [m for m in METHODS if tiny_model(m).pos.has_score_bias]


@pytest.mark.parametrize("pos", BIAS_METHODS)  # the methods that take the chunked float-mask path
def test_chunked_attention_equals_unchunked_in_the_model(pos, monkeypatch):
    model = tiny_model(pos)
    x = torch.from_numpy(TOKENS[:2 * 150].astype(np.int64)).view(2, 150)  # 150 > the table of 32: extrapolating
    with torch.inference_mode():
        full = model(x)
        [whole] = evaluate(model, [150], max_tokens=300)
    monkeypatch.setattr(attention_module, "MASK_BUDGET", 2 * 4 * 150 * 7)  # chunks of 7 queries
    monkeypatch.setattr(biased_attention, "EVAL_CHUNK", 7)
    monkeypatch.setattr(base_module, "CACHE_NUMEL", 4 * 7 * 150)  # and a cache that cannot keep them all
    with torch.inference_mode():
        chunked = model(x)
        [parts] = evaluate(model, [150], max_tokens=300)
    assert torch.allclose(chunked, full, atol=1e-5)
    assert parts.loss == pytest.approx(whole.loss, abs=1e-6)
    # the memoised per-chunk biases stay bounded: a long window must not pile up its full (H, T, T) bias
    assert sum(t.numel() for t in model.pos._static.values()) <= 4 * 7 * 150


def test_every_length_scores_the_same_tokens():
    results = evaluate(tiny_model("none"), [16, 20, 48], mode="both", max_tokens=200)  # 20: a short last window
    assert [(r.mode, r.length) for r in results] == [(m, n) for m in ("nonoverlapping", "sliding")
                                                     for n in (16, 20, 48)]
    assert {r.tokens for r in results} == {192}
    assert all(math.isfinite(r.loss) for r in results)
    # the position curve comes with the first mode's results, one loss per window offset
    assert [len(r.position_losses) for r in results[:3]] == [16, 20, 48]
    assert all(r.position_losses is None for r in results[3:])


def test_learned_past_its_table_is_na_not_a_failure():
    short, at_table, past = evaluate(tiny_model("learned"), [16, 32, 64], max_tokens=128)
    assert short.loss is not None and at_table.loss is not None
    assert past.loss is None and past.ppl is None and past.bpb is None and past.tokens == 128
    assert "'learned' positions stop at its table of 32 rows" in past.error


def test_position_loss_buckets():
    buckets = position_loss(np.arange(100.0), 16)
    assert [(b["start"], b["end"]) for b in buckets] == [(0, 16), (16, 32), (32, 64), (64, 100)]
    assert [b["loss"] for b in buckets] == [7.5, 23.5, 47.5, 81.5]


def test_report_has_the_json_layout(runs):
    report = extrapolation_report([runs["alibi"], runs["learned"]], EvalSettings(max_len=64, mode="both"),
                                  show_progress=False)
    json.dumps(report, allow_nan=False)  # plain JSON: no numpy scalars, no NaN
    alibi, learned = report["runs"]
    assert set(report) == {"runs"}
    assert {"run", "pos", "train_len", "results", "position_loss"} <= set(alibi)
    assert (alibi["run"], alibi["pos"], alibi["train_len"]) == (str(runs["alibi"]), "alibi", 16)
    assert [(r["mode"], r["length"]) for r in alibi["results"]] == [
        (m, n) for m in ("nonoverlapping", "sliding") for n in (16, 32, 64)]
    for r in alibi["results"]:
        assert set(r) == {"length", "mode", "ppl", "bpb", "tokens", "ppl_ci", "bpb_ci", "blocks"}
        assert r["ppl"] > 1 and r["bpb"] > 0
        assert r["ppl_ci"][0] <= r["ppl"] <= r["ppl_ci"][1] and r["bpb_ci"][0] <= r["bpb"] <= r["bpb_ci"][1]
    assert len({r["tokens"] for run in report["runs"] for r in run["results"]}) == 1
    assert [(b["start"], b["end"]) for b in alibi["position_loss"]] == [(0, 16), (16, 32), (32, 64)]
    assert set(alibi["position_loss"][0]) == {"start", "end", "loss"}
    # learned: n/a past its table of 16 rows, the curve from the longest length it could run
    na = [r for r in learned["results"] if r["length"] > 16]
    assert na and all(r["ppl"] is None and "table of 16 rows" in r["error"] for r in na)
    assert [(b["start"], b["end"]) for b in learned["position_loss"]] == [(0, 16)]


def test_data_override_uses_the_runs_tokenizer(runs):
    own = run_report(runs["alibi"], EvalSettings(lengths=[16, 32]))
    # the same text, tokenised again
    other = run_report(runs["alibi"], EvalSettings(lengths=[16, 32], data=runs["corpus"]))
    assert other["data"] == runs["corpus"]
    assert [r["ppl"] for r in other["results"]] == pytest.approx([r["ppl"] for r in own["results"]])


def test_a_changed_corpus_is_noted(runs, tmp_path):
    run = tmp_path / "moved"
    shutil.copytree(runs["alibi"], run)
    config = json.loads((run / "config.json").read_text())
    config["data"]["sha256"] = "0" * 64  # as if trained on another Python's builtin corpus
    (run / "config.json").write_text(json.dumps(config))
    assert "notes" not in run_report(runs["alibi"], EvalSettings(lengths=[16]))
    assert "not the text this run was trained on" in run_report(run, EvalSettings(lengths=[16]))["notes"][0]


def test_cli_tables_json_and_csv(runs, tmp_path):
    args = ["eval-extrapolate", str(runs["alibi"]), str(runs["learned"]), "--max-len", "64", "--mode", "both",
            "--quiet", "--json", str(tmp_path / "r.json"), "--csv", str(tmp_path / "r.csv")]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for text in ("perplexity by length (nonoverlapping)", "perplexity by length (sliding)", "n/a",
                 "table of 16 rows", "mean loss by position", "[32, 64)", "predictions of the valid split"):
        assert text in result.output
    report = json.loads((tmp_path / "r.json").read_text())
    assert [run["pos"] for run in report["runs"]] == ["alibi", "learned"]
    rows = list(csv.DictReader((tmp_path / "r.csv").open()))
    assert len(rows) == 2 * 2 * 3  # run x mode x length
    first = rows[0]
    assert (first["pos"], first["mode"], first["length"], first["ratio_to_train_len"]) == (
        "alibi", "nonoverlapping", "16", "1")
    assert float(first["ppl"]) == pytest.approx(report["runs"][0]["results"][0]["ppl"], rel=1e-5)
    assert float(first["ppl_ci_low"]) <= float(first["ppl"]) <= float(first["ppl_ci_high"])
    assert float(first["bpb_ci_low"]) <= float(first["bpb"]) <= float(first["bpb_ci_high"])
    assert " ±" in result.output and "t interval over the blocks" in result.output
    assert rows[-1]["ppl"] == "" and "table of 16 rows" in rows[-1]["error"]


def test_cli_defaults_to_the_newest_run(runs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs").mkdir()
    (tmp_path / "runs" / "a").symlink_to(runs["alibi"])
    result = CliRunner().invoke(app, ["eval-extrapolate", "--max-len", "32", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "alibi, trained at L = 16" in result.output


@pytest.mark.parametrize(("flag", "message"), [("--lengths=0,16", "--lengths must be positive, got 0"),
                                               ("--lengths=-16", "--lengths must be positive, got -16"),
                                               ("--mode=overlap", "--mode must be"),
                                               ("--split=train", "--split must be valid or test"),
                                               ("--rope-scaling=yarn", "needs a rotary model")])
def test_cli_bad_options_exit_2(runs, flag, message, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["posbench", "eval-extrapolate", str(runs["alibi"]), flag, "--quiet"])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_randomized_positions_are_scored_at_random_positions_reproducibly():
    """As the reference evaluates (experiments/range_evaluation.py): a fresh draw from [0, M) per
    forward pass; here from a fixed seed, so the same call scores the same."""
    model = tiny_model("alibi")
    plain = evaluate(model, [16, 32], max_tokens=64)
    drawn = evaluate(model, [16, 32, 64], max_tokens=64, random_positions=48)
    again = evaluate(model, [16, 32, 64], max_tokens=64, random_positions=48)
    assert [r.loss for r in drawn] == [r.loss for r in again]
    assert all(a.loss != b.loss for a, b in zip(plain, drawn[:2], strict=True))
    assert drawn[2].loss is None and "[0, 48)" in drawn[2].error  # 64 tokens need 64 distinct positions


def test_a_run_trained_with_randomized_positions_is_evaluated_with_them(tmp_path):
    model_cfg, cfg = tiny_train(write_corpus(tmp_path), "alibi", random_positions=32)
    run = train(model_cfg, cfg, out=tmp_path / "run", show_progress=False).run_dir
    report = run_report(run, EvalSettings(lengths=[16, 32, 64]))
    assert report["random_positions"] == 32
    assert [r["ppl"] is None for r in report["results"]] == [False, False, True]


def test_bits_per_byte_is_nats_over_ln2_over_bytes_per_token():
    """The summary's val_bpb: a loss of 3 ln 2 nats per token is 3 bits per token, 2 bits per byte
    at 1.5 bytes a token."""
    assert bits_per_byte(3 * math.log(2), 1.5) == pytest.approx(2.0)
    assert bits_per_byte(math.log(256), 1.0) == pytest.approx(8.0)  # uniform over bytes: 8 bits


def test_sliding_and_nonoverlapping_share_their_units():
    """Stride 1 scores most predictions in a window of their own; the interval still resamples the same
    blocks as the non-overlapping mode (0.1.0 resampled the stride-sized pieces: a token-level bootstrap)."""
    model = tiny_model("alibi", train_len=16)
    plain, _, sliding, _ = evaluate(model, [16, 64], mode="both", stride=1, max_tokens=384)
    assert sliding.mode == "sliding" and len(sliding.windows.loss) > 4 * len(plain.windows.loss)
    assert plain.windows.n_blocks == sliding.windows.n_blocks == 6
    assert np.array_equal(plain.windows.by_block()[1], sliding.windows.by_block()[1])  # the same predictions
