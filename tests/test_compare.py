"""`posbench compare`: verdicts from numbers, the whole experiment on a tiny preset, its files."""

import json
import sys

import pytest

from posbench import cli, presets
from posbench.compare import verdict
from posbench.presets import Preset

from .helpers import run_cli


def rows(*pairs):
    return [{"length": n, "ppl": p} for n, p in pairs]


def test_verdict_reads_the_numbers():
    assert verdict(rows((64, 20.0), (128, 19.8), (1024, 21.0)), 64) == "extrapolates"
    assert verdict(rows((64, 20.0), (128, 15.0)), 64).startswith("extrapolates (improves")
    assert verdict(rows((64, 20.0), (128, 30.0), (256, 45.0), (512, 90.0)), 64) == "explodes by 4xL (up to 4.5x)"
    assert verdict(rows((64, 20.0), (128, 25.0)), 64) == "degrades (up to 1.25x)"
    assert verdict(rows((64, 20.0), (128, None)), 64) == "cannot run past L"


@pytest.fixture
def tiny_preset(monkeypatch):
    tiny = Preset("tiny", model=dict(n_layer=1, n_head=2, d_model=16),
                  train=dict(train_len=16, batch_size=4, steps=4, warmup=1, tokenizer="bytes", eval_every=2,
                             eval_tokens=128, save_every=2),
                  max_len=64, eval_tokens=64)
    monkeypatch.setitem(presets.PRESETS, "tiny", tiny)


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
