"""inspect-heads: metrics on constructed attention, the probe against SDPA, Spearman, the report, the CLI."""

import json
import math

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from posbench.cli import app
from posbench.data.tokens import prepare_data
from posbench.errors import PosbenchError
from posbench.evaluation.heads import (
    head_stats,
    inspect_heads,
    probe,
    query_metrics,
    spearman_interval,
    spread_windows,
)
from posbench.evaluation.stats import rank, spearman
from posbench.model import attention as attention_module
from posbench.positions import alibi_slopes
from posbench.runs.folder import held_out_tokens, load_run
from posbench.train import train

from .helpers import ALL_METHODS, tiny_model, tiny_train, write_corpus

N = 12


def previous_token(n: int = N) -> torch.Tensor:
    p = torch.zeros(1, 1, n, n)
    p[0, 0, 0, 0] = 1.0  # query 0 has only itself
    p[0, 0, torch.arange(1, n), torch.arange(n - 1)] = 1.0
    return p


def uniform(n: int = N) -> torch.Tensor:
    return torch.ones(n, n).tril().div(torch.arange(1, n + 1)[:, None])[None, None]  # (1, 1, n, n)


def test_previous_token_head_metrics():
    m = {k: v[0, 0] for k, v in query_metrics(previous_token()).items()}
    i = torch.arange(N)
    assert torch.equal(m["mean_distance"], (i > 0).float())
    assert torch.equal(m["span90"], (i > 0).long()) and torch.equal(m["span50"], (i > 0).long())
    assert torch.equal(m["entropy"], torch.zeros(N))
    assert torch.equal(m["sink"], (i <= 1).float())  # queries 0 and 1 look at token 0


def test_uniform_head_metrics_match_closed_forms():
    m = {k: v[0, 0] for k, v in query_metrics(uniform()).items()}
    i = torch.arange(N)
    torch.testing.assert_close(m["mean_distance"], i / 2)
    torch.testing.assert_close(m["entropy"], torch.log(i + 1.0))
    torch.testing.assert_close(m["sink"], 1 / (i + 1.0))
    for name, f in (("span50", 0.5), ("span90", 0.9)):  # keys i-d..i hold (d+1)/(i+1)
        assert m[name].tolist() == [math.ceil(round(f * (k + 1), 9)) - 1 for k in range(N)], name


def test_metrics_of_a_query_chunk_are_the_rows_of_the_whole():
    p = torch.softmax(torch.randn(2, 3, N, N).masked_fill(torch.ones(N, N).triu(1).bool(), -math.inf), -1)
    whole = query_metrics(p)
    part = query_metrics(p[:, :, 5:9, :9], start=5)  # keys past the chunk are all future
    for name in whole:
        torch.testing.assert_close(part[name], whole[name][:, :, 5:9])


def test_spearman_known_values():
    assert rank([10, 20, 20, 30]).tolist() == [1, 2.5, 2.5, 4]
    assert spearman([1, 2, 3, 4], [10, 20, 30, 1000]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # the Wikipedia example: IQ against hours of TV per week, rho = -29/165
    iq = [106, 86, 100, 101, 99, 103, 97, 113, 112, 110]
    tv = [7, 0, 27, 50, 28, 29, 20, 12, 6, 17]
    assert spearman(iq, tv) == pytest.approx(-29 / 165)
    # ties: Pearson of average ranks, [1, 2.5, 2.5, 4] against [1, 2, 3, 4]
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert spearman([1, 2, 3], [5, 5, 5]) is None and spearman([1], [2]) is None


@pytest.mark.parametrize("budget", [None, 2 * 4 * 32 * 3])  # default, and chunks of 3 queries
@pytest.mark.parametrize("pos", ALL_METHODS)
def test_probe_matches_the_model(pos, budget, monkeypatch):
    if budget is not None:
        monkeypatch.setattr(attention_module, "PROBE_BUDGET", budget)
    model = tiny_model(pos)
    idx = torch.randint(0, 64, (2, 32), generator=torch.Generator().manual_seed(0))
    captured = []  # the output of every layer's attn.proj: model first, then probe
    hooks = [b.attn.proj.register_forward_hook(lambda m, i, o: captured.append(o)) for b in model.blocks]
    chunks = []

    def visit(layer, start, p):
        chunks.append((layer, start, p.size(2)))
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]))
        assert p.size(3) == start + p.size(2)  # no key beyond the chunk's last query
        assert (p.triu(start + 1) == 0).all()  # nothing on future keys

    with torch.no_grad():
        expected = model(idx)
    logits = probe(model, idx, visit)
    for hook in hooks:
        hook.remove()
    L = model.config.n_layer
    for a, b in zip(captured[:L], captured[L:], strict=True):
        torch.testing.assert_close(b, a, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(logits, expected, atol=1e-4, rtol=1e-4)
    sizes = [c for layer, _, c in chunks if layer == 0]
    assert sum(sizes) == 32 and max(sizes) == (32 if budget is None else 3)


def test_head_stats_do_not_depend_on_chunking_or_batching(monkeypatch):
    model = tiny_model("t5")
    windows = torch.randint(0, 64, (3, 32), generator=torch.Generator().manual_seed(1))
    whole = head_stats(model, windows)
    monkeypatch.setattr(attention_module, "PROBE_BUDGET", 5)  # one query per chunk
    chunked = head_stats(model, windows, batch_size=2)
    assert set(whole) == {"mean_distance", "span50", "span90", "entropy", "sink", "span90_by_window"}
    assert whole["span90_by_window"].shape == (2, 3, 4, 32)  # layer, window, head, query
    torch.testing.assert_close(chunked.pop("span90_by_window"), whole.pop("span90_by_window"))
    for name in whole:
        assert whole[name].shape == (2, 4)
        torch.testing.assert_close(chunked[name], whole[name], check_dtype=False)
    only = head_stats(model, windows, layers=[1])
    torch.testing.assert_close(only["span90"], whole["span90"][1:])


def params_of(pos, length: int = 32) -> dict:
    """What a method says of itself, less the table's presentation (column title, labels)."""
    return {k: v for k, v in pos.describe(length).items() if k not in ("column", "head_labels")}


def test_methods_describe_their_parameters():
    alibi = tiny_model("alibi").pos.describe(32)
    assert alibi["slope"] == alibi_slopes(4).tolist() and alibi["column"] == "slope"
    assert len(alibi["head_labels"]) == 4
    assert tiny_model("rotary").pos.describe(32) == {}
    scaled = tiny_model("scaled-sinusoidal").pos
    assert params_of(scaled) == {"scale": pytest.approx(scaled.scale.item())}
    t5 = tiny_model("t5").pos
    with torch.no_grad():
        t5.bias.weight.zero_()
        t5.bias.weight[3, 1] = 2.0  # head 1 favours distance 3 (buckets 0..7 are exact distances)
        t5.bias.weight[0, 2] = -1.0
    profile = params_of(t5)["t5_bias"]
    assert [b["peak_distance"] for b in profile] == [0, 3, 1, 0]
    assert profile[2]["bias_d0"] == -1.0 and profile[1]["bias_d16"] == 0.0
    kerple = tiny_model("kerple").pos
    params = kerple.describe(32)
    assert [k["r1"] for k in params["kerple"]] == pytest.approx(kerple.r1.tolist())
    assert params["column"] == "r1 / r2" and len(params["head_labels"]) == 4
    fire = tiny_model("fire").pos
    assert params_of(fire) == {"fire": {"c": pytest.approx(fire.c.item()),
                                                "L": pytest.approx(fire.threshold.item())}}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One tiny ALiBi run under <tmp>/runs/ (trained once for the module)."""
    root = tmp_path_factory.mktemp("heads")
    with pytest.MonkeyPatch.context() as mp:  # the autouse cache fixture is per test; set it here too
        mp.setenv("POSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        model_cfg, cfg = tiny_train(write_corpus(root))
        train(model_cfg, cfg, out=root / "runs" / "alibi", show_progress=False)
    return root / "runs" / "alibi"


def test_windows_spread_over_the_split(trained):
    model, tokenizer, config = load_run(trained)
    c = config.train
    tokens = np.asarray(prepare_data(c.data, c.tokenizer, c.vocab_size, c.seed).splits["test"])
    held_out, notes = held_out_tokens(trained, config, tokenizer, "test")
    assert np.array_equal(held_out, tokens) and notes == []
    windows = spread_windows(held_out, "test", 16, 5)
    assert windows.shape == (5, 16)
    assert windows[0].tolist() == tokens[:16].tolist() and windows[-1].tolist() == tokens[-16:].tolist()
    with pytest.raises(PosbenchError, match="fewer than one window of --length"):
        spread_windows(held_out, "test", len(tokens) * 10, 2)
    with pytest.raises(PosbenchError, match="--split"):
        held_out_tokens(trained, config, tokenizer, "train")


def test_report_layout(trained):
    report = inspect_heads(trained, samples=3, length=24)
    json.loads(json.dumps(report))  # JSON-able as it is
    assert set(report) == {"run", "pos", "length", "heads", "summary"}
    assert report["pos"] == "alibi" and report["length"] == 24 and report["run"] == str(trained)
    assert [(h["layer"], h["head"]) for h in report["heads"]] == [(0, 0), (0, 1)]
    keys = {"layer", "head", "mean_distance", "span50", "span90", "entropy", "sink", "slope"}
    assert all(set(h) == keys for h in report["heads"])
    assert [h["slope"] for h in report["heads"]] == alibi_slopes(2).tolist()
    for h in report["heads"]:
        assert 0 <= h["span50"] <= h["span90"] <= 23 and 0 <= h["sink"] <= 1
        assert 0 <= h["entropy"] <= math.log(24) and 0 <= h["mean_distance"] <= 23
    layer = report["summary"]["layers"][0]
    assert set(layer) == {"layer", "span90", "span50", "spearman_slope_span90", "spearman_slope_mean_distance",
                          "spearman_slope_span90_ci"}
    low, high = layer["spearman_slope_span90_ci"] or (-1, 1)  # None: no resample defines it (2 heads tie)
    if layer["spearman_slope_span90"] is not None:
        assert low <= layer["spearman_slope_span90"] <= high
    assert report["summary"]["samples"] == 3 and report["summary"]["split"] == "valid"
    with pytest.raises(PosbenchError, match="--layer 1 is out of range"):
        inspect_heads(trained, layer=1)


def test_cli_writes_table_json_and_plot(trained, tmp_path, monkeypatch):
    monkeypatch.chdir(trained.parent.parent)  # no RUN: the newest run under runs/
    out = CliRunner().invoke(app, ["inspect-heads", "--samples", "2", "--split", "test",
                                   "--json", str(tmp_path / "h.json"), "--plot", str(tmp_path / "h.png")])
    assert out.exit_code == 0, out.output
    for text in ("layer 0", "slope", "span90", "Spearman(slope, span90)"):
        assert text in out.output
    report = json.loads((tmp_path / "h.json").read_text())
    assert report["length"] == 16 and len(report["heads"]) == 2  # the training length by default
    png = (tmp_path / "h.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 1000


def test_spearman_interval_over_windows():
    slopes = [0.5, 0.25, 0.125, 0.0625]
    rng = torch.Generator().manual_seed(0)
    # span90 of every query: head h looks about 2**h * 4 tokens back, noisy from window to window
    spans = torch.stack([torch.stack([(4 * 2**h + torch.randint(-3, 4, (16,), generator=rng)) for h in range(4)])
                         for _ in range(6)])  # (K=6 windows, H=4, N=16)
    low, high = spearman_interval(slopes, spans)
    assert -1 <= low <= high < -0.9  # the steeper the slope, the shorter the span, in every resample
    noisy = torch.randint(0, 20, (6, 4, 16), generator=rng)  # spans unrelated to slopes
    low, high = spearman_interval(slopes, noisy)
    assert low < 0 < high, "no relation: the interval straddles 0"
    assert spearman_interval(slopes, spans[:1]) is None
