"""`posbench compare`: verdicts from numbers, the whole experiment on a tiny preset, its files."""

import json
import math
import sys

import pytest
import torch

import posbench.experiments.compare as compare_module
from posbench import cli
from posbench.errors import PosbenchError
from posbench.experiments import presets
from posbench.experiments.presets import CorpusPreset
from posbench.experiments.verdicts import verdict
from posbench.runs.config import RunConfig

from .helpers import run_cli


def identity(raw: dict) -> dict:
    return RunConfig.from_json(raw).identity()


def rows(*pairs):
    return [{"length": n, "ppl": p} for n, p in pairs]


def test_verdict_reads_the_numbers():
    assert verdict(rows((64, 20.0), (128, 19.8), (1024, 21.0)), 64) == "extrapolates"
    assert verdict(rows((64, 20.0), (128, 15.0)), 64).startswith("extrapolates (improves")
    assert verdict(rows((64, 20.0), (128, 30.0), (256, 45.0), (512, 90.0)), 64) == "explodes by 4xL (up to 4.5x)"
    assert verdict(rows((64, 20.0), (128, 25.0)), 64) == "degrades (up to 1.25x)"
    assert verdict(rows((64, 20.0), (128, None)), 64) == "cannot run past L"
    assert verdict(rows((32, 21.0), (64, 20.0)), 64) == "not evaluated past L"  # not "extrapolates"


@pytest.fixture
def tiny_preset(monkeypatch):
    tiny = CorpusPreset("tiny", model=dict(n_layer=1, n_head=2, d_model=16),
                  train=dict(train_len=16, batch_size=4, steps=4, warmup=1, tokenizer="bytes", eval_every=2,
                             eval_tokens=128, save_every=2),
                  max_len=64, eval_tokens=256)  # 4 blocks: an interval over blocks
    monkeypatch.setitem(presets.CORPUS_PRESETS, "tiny", tiny)


def test_compare_trains_evaluates_and_writes(tiny_preset, corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    args = ["posbench", "compare", "--pos", "alibi,learned", "--preset", "tiny", "--data", corpus,
            "--out", str(out), "--device", "cpu", "--quiet"]
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    printed = capsys.readouterr().out
    assert "n/a" in printed and "cannot run past L" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["pos"] for r in results["runs"]] == ["alibi", "learned"]
    for run in results["runs"]:
        assert run["train_len"] == 16
        assert [r["length"] for r in run["results"]] == [16, 32, 64]
        assert {"params", "train_tokens_per_s", "ppl_at_L", "max_len_ratio", "verdict", "position_loss"} <= set(run)
    assert len({r["tokens"] for run in results["runs"] for r in run["results"]}) == 1, "same tokens at every length"
    assert results["versions"]["torch"]
    assert (out / "results.csv").read_text().count("\n") == 1 + 6
    png = (out / "ppl_vs_length.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000

    # a second call reuses the finished runs (no retraining), and RUN arguments only evaluate
    before = (out / "alibi" / "model.safetensors").stat().st_mtime_ns
    monkeypatch.setattr(sys, "argv", args)
    with pytest.raises(SystemExit):
        cli.main()
    assert (out / "alibi" / "model.safetensors").stat().st_mtime_ns == before
    monkeypatch.setattr(sys, "argv", ["posbench", "compare", str(out / "alibi"), "--preset", "tiny",
                                      "--out", str(tmp_path / "evalonly"), "--quiet", "--device", "cpu"])
    with pytest.raises(SystemExit):
        cli.main()
    assert json.loads((tmp_path / "evalonly" / "results.json").read_text())["runs"][0]["pos"] == "alibi"


def test_unknown_method_and_preset(capsys, monkeypatch):
    for args, expected in ((["--pos", "alibi,rotery"], "did you mean 'rotary'"),
                           (["--preset", "huge"], "unknown preset 'huge'")):
        monkeypatch.setattr(sys, "argv", ["posbench", "compare", *args])
        with pytest.raises(SystemExit) as exit_info:
            cli.main()
        assert exit_info.value.code == 2
        assert expected in capsys.readouterr().err


def test_compare_embed_norm_trains_labelled_runs(tiny_preset, corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "cmp"
    monkeypatch.setattr(sys, "argv", ["posbench", "compare", "--pos", "alibi", "--embed-norm", "--preset", "tiny",
                                      "--data", corpus, "--out", str(out), "--device", "cpu", "--quiet"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    assert "alibi+ln" in capsys.readouterr().out
    results = json.loads((out / "results.json").read_text())
    assert results["embed_norm"] is True
    [row] = results["runs"]
    assert row["pos"] == "alibi" and row["label"] == "alibi+ln" and row["run"] == str(out / "alibi+ln")
    assert results["configs"]["alibi+ln"]["model"]["embed_norm"] is True
    assert (out / "results.csv").read_text().splitlines()[1].startswith("alibi,alibi+ln,")


def test_rope_scaling_rows_beside_the_rotary_run(tiny_preset, corpus, tmp_path, monkeypatch, capsys):
    out = tmp_path / "rope"
    args = ["compare", "--pos", "rotary,alibi", "--preset", "tiny", "--data", corpus, "--out", str(out),
            "--device", "cpu", "--quiet", "--rope-scaling", "yarn:4,linear"]
    code, printed, _ = run_cli(args, capsys, monkeypatch)
    assert code in (0, None)
    rows = json.loads((out / "results.json").read_text())["runs"]
    # max-len 64 / L 16: linear without a factor reaches the longest length, x4; alibi gets no extra row
    assert [r["label"] for r in rows] == ["rotary", "rotary+yarn×4", "rotary+linear×4", "alibi"]
    assert rows[1]["rope_scaling"] == {"kind": "yarn", "factor": 4.0}
    assert rows[0]["results"][0]["ppl"] != rows[1]["results"][0]["ppl"], "scaling changes the model"
    assert "rotary+yarn×4" in printed


def test_bad_rope_scaling_spec(capsys, monkeypatch):
    code, _, err = run_cli(["compare", "--rope-scaling", "yarn:four"], capsys, monkeypatch)
    assert code == 2 and "KIND[:FACTOR]" in err


def test_verdict_knows_the_noise():
    def with_ci(*triples):  # (length, ratio to L, interval)
        return [{"length": n, "ppl": 20.0 * x, "vs_L": {"ratio": x, "ci": ci}} for n, x, ci in triples]

    at_l = (64, 1.0, [1.0, 1.0])
    assert verdict(with_ci(at_l, (128, 1.3, [1.1, 1.5])), 64) == "degrades (up to 1.30x [1.10–1.50])"
    # the same rise with an interval that straddles 1: no claim
    assert verdict(with_ci(at_l, (128, 1.3, [0.9, 1.8])), 64) == (
        "within noise (up to 1.30x [0.90–1.80], the interval includes 1)")
    assert verdict(with_ci(at_l, (128, 2.5, [2.1, 2.9])), 64) == "explodes by 2xL (up to 2.5x [2.1–2.9])"
    assert verdict(with_ci(at_l, (128, 0.9, [0.85, 0.95])), 64) == "extrapolates (improves to 0.90x)"
    assert verdict(with_ci(at_l, (128, 0.9, [0.7, 1.1])), 64) == "extrapolates"  # an improvement inside the noise


def test_tokenizer_seed_keeps_old_run_identity():
    old = {"model": {"pos": "alibi"}, "data": {}, "train": {"seed": 3, "steps": 4}}
    for value in (None, 3):
        assert identity(old) == identity(old | {"train": {"seed": 3, "steps": 4, "tokenizer_seed": value}})
    assert identity(old) != identity(old | {"train": {"seed": 3, "steps": 4, "tokenizer_seed": 0}})


def test_compare_with_seeds(tiny_preset, corpus, tmp_path, capsys, monkeypatch):
    out = tmp_path / "seeds"
    args = ["compare", "--pos", "alibi", "--seeds", "2", "--seed", "5", "--preset", "tiny", "--data", corpus,
            "--out", str(out), "--device", "cpu", "--quiet"]
    code, printed, _ = run_cli(args, capsys, monkeypatch)
    assert code in (0, None)
    results = json.loads((out / "results.json").read_text())
    assert results["seeds"] == [5, 6]
    [row] = results["runs"]
    assert row["seed_runs"] == [str(out / "alibi" / "seed5"), str(out / "alibi" / "seed6")]
    configs = [json.loads((out / "alibi" / f"seed{k}" / "config.json").read_text())["train"] for k in (5, 6)]
    assert [c["seed"] for c in configs] == [5, 6] and [c["tokenizer_seed"] for c in configs] == [5, 5]
    for r in row["results"]:
        a, b = r["ppl_seeds"]
        assert a != b, "two seeds are two different runs"
        assert r["ppl"] == pytest.approx(math.sqrt(a * b))  # the geometric mean: seeds on the log scale
        assert r["ppl_ci"][0] <= min(a, b) and max(a, b) <= r["ppl_ci"][1]
        assert r["vs_best"] == {"best": "alibi", "ratio": 1.0, "ci": [1.0, 1.0]}  # itself, paired: exactly 1
    assert "geometric mean over 2 seeds" in printed and "t interval over" in printed
    header = (out / "results.csv").read_text().splitlines()[0].split(",")
    assert {"ppl_ci_low", "ppl_ci_high", "bpb_ci_low", "bpb_ci_high", "ppl_seeds", "ratio_to_best"} <= set(header)
    assert (out / "loss_curves.png").read_bytes().startswith(b"\x89PNG")


def test_a_failing_method_costs_only_itself(tiny_preset, corpus, tmp_path, capsys, monkeypatch):
    real_train = compare_module.train

    def flaky(model_config, cfg, **kw):
        if model_config.pos == "rotary":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB\nmore detail")
        return real_train(model_config, cfg, **kw)

    out = tmp_path / "fail"
    args = ["compare", "--pos", "rotary,alibi", "--preset", "tiny", "--data", corpus, "--out", str(out),
            "--device", "cpu", "--quiet"]
    monkeypatch.setattr(compare_module, "train", flaky)
    code, printed, _ = run_cli(args, capsys, monkeypatch)
    assert code == 1
    assert "failed" in printed and "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB" in printed
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == ["alibi"]
    assert results["failures"] == [{"label": "rotary", "pos": "rotary", "run": str(out / "rotary"),
                                    "error": "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"}]
    assert "OutOfMemoryError" in (out / "results.csv").read_text()

    # the same command again retries only what failed
    trained = []
    monkeypatch.setattr(compare_module, "train", lambda m, c, **kw: trained.append(m.pos) or real_train(m, c, **kw))
    before = (out / "alibi" / "model.safetensors").stat().st_mtime_ns
    code, _, _ = run_cli(args, capsys, monkeypatch)
    assert code in (0, None)
    assert (out / "alibi" / "model.safetensors").stat().st_mtime_ns == before
    results = json.loads((out / "results.json").read_text())
    assert [r["label"] for r in results["runs"]] == ["rotary", "alibi"] and results["failures"] == []


def test_a_method_one_of_whose_seeds_fails_is_a_failure_not_a_row_of_fewer_seeds(tiny_preset, corpus, tmp_path,
                                                                                  capsys, monkeypatch):
    real_train = compare_module.train

    def second_seed_fails(model_config, cfg, **kw):
        if model_config.pos == "rotary" and cfg.seed == 1:
            raise PosbenchError("loss became nan at step 3")
        return real_train(model_config, cfg, **kw)

    out = tmp_path / "fail"
    monkeypatch.setattr(compare_module, "train", second_seed_fails)
    code, _, _ = run_cli(["compare", "--pos", "rotary,alibi", "--seeds", "3", "--preset", "tiny", "--data", corpus,
                          "--out", str(out), "--device", "cpu", "--quiet"], capsys, monkeypatch)
    assert code == 1
    results = json.loads((out / "results.json").read_text())
    assert [(r["label"], r["seeds"]) for r in results["runs"]] == [("alibi", [0, 1, 2])]
    assert results["failures"] == [{"label": "rotary", "pos": "rotary", "run": str(out / "rotary"),
                                    "error": "loss became nan at step 3"}]
    assert (out / "rotary" / "seed2" / "model.safetensors").is_file()  # the other seeds trained: a rerun reuses them


def test_bad_input_shared_by_every_method_is_one_error(tiny_preset, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["compare", "--pos", "alibi,rotary", "--preset", "tiny", "--data", str(tmp_path / "x.txt"),
                            "--out", str(tmp_path / "o"), "--quiet", "--device", "cpu"], capsys, monkeypatch)
    assert code == 2 and "does not exist" in err and not (tmp_path / "o").exists()
    code, _, err = run_cli(["compare", "--seeds", "0"], capsys, monkeypatch)
    assert code == 2 and "--seeds must be at least 1" in err


def test_failure_reason_is_one_line():
    nan = "loss became nan at step 3; stopped without saving. Try a lower --lr."
    assert compare_module.failure_reason(PosbenchError(nan)) == nan
    assert compare_module.failure_reason(RuntimeError("boom\n  at line 3")) == "RuntimeError: boom"
    assert compare_module.failure_reason(ValueError()) == "ValueError"
