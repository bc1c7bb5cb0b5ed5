"""The commands on hf:MODEL: eval-extrapolate on each architecture (bits per byte leading for a mix of
tokenizers), compare (paired when the tokens are the same, refused otherwise), inspect-heads, rope
scaling mapped onto the model's own config, and the errors a user can meet."""

import json
import os
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # noqa: E402 (before transformers is imported)

import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("transformers")

from posbench.errors import PosbenchError  # noqa: E402
from posbench.pretrained.hub import load_config, load_model  # noqa: E402
from posbench.train import train  # noqa: E402

from .helpers import run_cli, tiny_train, write_corpus  # noqa: E402
from .hf_models import ARCHITECTURES, CONTEXT, own_model  # noqa: E402

FAST = ["--max-tokens", "256", "--quiet"]



@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_eval_extrapolate_on_each_architecture(arch, tiny, corpus_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "eval.json"
    code, stdout, err = run_cli(["eval-extrapolate", tiny[arch], "--data", corpus_path, "--max-len", "128",
                                 "--json", str(out), *FAST], capsys, monkeypatch)
    assert code == 0, err
    assert "perplexity by length" in stdout and f"trained at L = {CONTEXT}" in stdout
    (report,) = json.loads(out.read_text())["runs"]
    assert report["label"] == f"hf:{arch}" and report["pos"] == f"hf:{arch}" and report["train_len"] == CONTEXT
    assert [r["length"] for r in report["results"]] == [32, 64, 128]  # context / 2, context, ... --max-len
    assert [r["length"] for r in report["context_use"]] == [64, 128] and "context_verdict" in report
    at_l = report["results"][1]
    assert at_l["ppl"] > 1 and at_l["bpb"] > 0 and at_l["ppl_ci"][0] < at_l["ppl"] < at_l["ppl_ci"][1]
    if arch == "gpt2":  # a learned table of 64 positions
        assert report["results"][2]["ppl"] is None and "past its table" in report["results"][2]["error"]


def test_a_mix_of_tokenizers_leads_with_bits_per_byte(tiny, corpus_path, capsys, monkeypatch):
    code, stdout, err = run_cli(["eval-extrapolate", tiny["gpt2"], tiny["llama"], "--data", corpus_path,
                                 "--lengths", "32,64", "--no-context-use", *FAST], capsys, monkeypatch)
    assert code == 0, err
    assert "bits per byte by length" in stdout and "bits per byte lead" in stdout
    code, stdout, _ = run_cli(["eval-extrapolate", tiny["gpt2"], tiny["bloom"], "--data", corpus_path,
                               "--lengths", "32,64", "--no-context-use", *FAST], capsys, monkeypatch)
    assert code == 0 and "perplexity by length" in stdout  # one tokenizer: perplexity leads, as for runs


def test_compare_pairs_models_with_the_same_tokens(tiny, corpus_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "cmp"
    code, stdout, err = run_cli(["compare", tiny["gpt_neox"], tiny["bloom"], "--data", corpus_path, "--max-len",
                                 "128", "--eval-tokens", "512", "--out", str(out), "--quiet"], capsys, monkeypatch)
    assert code == 0, err
    results = json.loads((out / "results.json").read_text())
    assert [row["label"] for row in results["runs"]] == ["hf:gpt_neox", "hf:bloom"] and not results["failures"]
    for row in results["runs"]:
        assert [r["length"] for r in row["results"]] == [32, 64, 128] and row["verdict"]
        for r in row["results"]:  # paired over the same blocks: an interval on every ratio to the best
            assert r["vs_best"]["ci"] is not None
    assert (out / "ppl_vs_length.png").is_file() and (out / "results.csv").is_file()
    assert "loss_curves.png" not in stdout


def test_compare_refuses_other_tokens(tiny, corpus_path, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["compare", tiny["gpt2"], tiny["llama"], "--data", corpus_path, "--out",
                            str(tmp_path / "cmp"), "--quiet"], capsys, monkeypatch)
    assert code == 2 and "cannot compare hf:gpt2 with hf:llama: their tokenizer differs" in err
    run = tmp_path / "run"
    train(*tiny_train(corpus_path, "alibi"), out=run, show_progress=False)
    code, _, err = run_cli(["compare", str(run), tiny["gpt2"], "--data", corpus_path, "--out",
                            str(tmp_path / "cmp"), "--quiet"], capsys, monkeypatch)
    assert code == 2 and "their tokenizer differs" in err and not (tmp_path / "cmp").exists()


def test_inspect_heads_cli_on_an_alibi_model(tiny, corpus_path, tmp_path, capsys, monkeypatch):
    out = tmp_path / "heads.json"
    code, stdout, err = run_cli(["inspect-heads", tiny["bloom"], "--data", corpus_path, "--length", "32",
                                 "--samples", "3", "--device", "cpu", "--json", str(out)], capsys, monkeypatch)
    assert code == 0, err
    assert "slope" in stdout and "Spearman(slope, span90)" in stdout and "[95%:" in stdout
    assert json.loads(out.read_text())["summary"]["params"]["column"] == "slope"
    code, stdout, err = run_cli(["inspect-heads", tiny["llama"], "--data", corpus_path, "--length", "32",
                                 "--samples", "2", "--layer", "1"], capsys, monkeypatch)
    assert code == 0, err
    assert "layer 1" in stdout and "Spearman" not in stdout


def test_inspect_heads_data_for_runs_and_device_only_for_models(corpus_path, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    train(*tiny_train(corpus_path, "alibi"), out=run, show_progress=False)
    other = write_corpus(tmp_path, n_lines=120)  # another corpus, tokenised with the run's own tokenizer
    code, stdout, err = run_cli(["inspect-heads", str(run), "--data", other, "--samples", "2"], capsys, monkeypatch)
    assert code == 0 and "2 windows of 16 tokens" in stdout, err
    code, _, err = run_cli(["inspect-heads", str(run), "--device", "cuda"], capsys, monkeypatch)
    assert code == 2 and "--device and --precision are for hf: models" in err


def rope_kwargs(spec: str, rope: dict) -> dict:
    """Rope scaling as transformers documents it for this version: rope_parameters (5.x, with the
    model's rope_theta kept), rope_scaling before."""
    config = load_config(spec)
    if isinstance(getattr(config, "rope_parameters", None), dict):
        return {"rope_parameters": {**config.rope_parameters, **rope}}
    return {"rope_scaling": rope}


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
@pytest.mark.parametrize("kind", ["linear", "dynamic", "yarn"])
def test_rope_scaling_is_the_models_own(arch, kind, tiny):
    """posbench's --rope-scaling KIND at factor 4 gives the logits of the model loaded with
    transformers' own rope setting of that kind (past the trained context, where they matter)."""
    rope = {"rope_type": kind, "factor": 4.0} | ({"original_max_position_embeddings": CONTEXT} if kind == "yarn"
                                                 else {})
    idx = torch.randint(0, 250, (1, 3 * CONTEXT), generator=torch.Generator().manual_seed(0))
    mine = load_model(tiny[arch], rope_scaling=(kind, 4.0))(idx)
    theirs = own_model(tiny[arch], **rope_kwargs(tiny[arch], rope))(idx).logits
    torch.testing.assert_close(mine, theirs)
    assert not torch.allclose(mine, own_model(tiny[arch])(idx).logits)  # the scaling did change something


def test_rope_scaling_errors(tiny, corpus_path, capsys, monkeypatch):
    with pytest.raises(PosbenchError, match="has no rotary positions"):
        load_model(tiny["bloom"], rope_scaling=("linear", 2.0))
    code, _, err = run_cli(["eval-extrapolate", tiny["llama"], "--rope-scaling", "ntk", "--data", corpus_path,
                            *FAST], capsys, monkeypatch)
    assert code == 2 and "no counterpart in transformers" in err
    code, stdout, err = run_cli(["eval-extrapolate", tiny["llama"], "--rope-scaling", "yarn", "--lengths",
                                 "64,128", "--data", corpus_path, "--no-context-use", *FAST], capsys, monkeypatch)
    assert code == 0 and "hf:llama+yarn×2" in stdout, err  # default factor: the longest length / the context


def test_user_errors_are_one_line(tiny, tmp_path, capsys, monkeypatch):
    code, _, err = run_cli(["eval-extrapolate", f"hf:{tmp_path}/missing"], capsys, monkeypatch)
    assert code == 2 and "no folder" in err
    code, _, err = run_cli(["eval-extrapolate", "hf:posbench-tests/no-such-model"], capsys, monkeypatch)
    assert code == 2 and "cannot load the config of hf:posbench-tests/no-such-model" in err, err
    import transformers

    t5 = transformers.T5Config(vocab_size=64, d_model=16, d_ff=32, num_layers=1, num_heads=2, d_kv=8)
    transformers.T5ForConditionalGeneration(t5).save_pretrained(tmp_path / "t5")
    code, _, err = run_cli(["eval-extrapolate", f"hf:{tmp_path}/t5"], capsys, monkeypatch)
    assert code == 2 and "is a t5 model, which transformers has no causal language model" in err
    code, _, err = run_cli(["inspect-heads", tiny["gpt2"], "--length", "65"], capsys, monkeypatch)
    assert code == 2 and "past its table" in err
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    code, _, err = run_cli(["eval-extrapolate", tiny["gpt2"]], capsys, monkeypatch)
    assert code == 2 and "pip install 'posbench[hf]'" in err and len(err.strip().splitlines()) == 1
