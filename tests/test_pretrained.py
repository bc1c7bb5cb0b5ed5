"""Pretrained Hugging Face models (hf:NAME) under posbench's protocol, offline: tiny randomly initialised
models of four architectures built from their configs, with a byte-level BPE tokenizer trained here.
posbench's per-token losses equal the model's own loss, the heads probe reads the model's own attention
weights, BLOOM's slopes are read as transformers computes them, and token bytes add up to the text's."""

import json
import math

import pytest
import torch

transformers = pytest.importorskip("transformers")
tokenizers = pytest.importorskip("tokenizers")

from posbench.errors import PosbenchError  # noqa: E402
from posbench.evaluation.heads import inspect_heads, probe  # noqa: E402
from posbench.evaluation.scoring import token_losses  # noqa: E402
from posbench.pretrained import load, load_pretrained  # noqa: E402
from posbench.pretrained.tokens import token_bytes  # noqa: E402

from .helpers import run_cli  # noqa: E402

TEXT = "def f(x):\n    return x * 2  # doubles — unicode too: é, ü, 東京\n" * 20
SHAPES = {  # tiny shapes; each architecture's own config field names
    "gpt2": lambda v: transformers.GPT2Config(vocab_size=v, n_positions=64, n_embd=32, n_layer=2, n_head=2),
    "gpt_neox": lambda v: transformers.GPTNeoXConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2,
                                                     num_attention_heads=2, intermediate_size=64,
                                                     max_position_embeddings=64),
    # seq_length: the context a BLOOM config can carry (its own keep none: posbench reads 2,048 then)
    "bloom": lambda v: transformers.BloomConfig(vocab_size=v, hidden_size=48, n_layer=2, n_head=6, seq_length=64),
    "llama": lambda v: transformers.LlamaConfig(vocab_size=v, hidden_size=32, num_hidden_layers=2,
                                                num_attention_heads=2, num_key_value_heads=2, intermediate_size=64,
                                                max_position_embeddings=64),
}


@pytest.fixture(scope="module")
def tokenizer_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("tokenizer")
    bpe = tokenizers.ByteLevelBPETokenizer()
    bpe.train_from_iterator([TEXT, "the quick brown fox jumps over the lazy dog"], vocab_size=300, min_frequency=1,
                            show_progress=False)
    fast = transformers.PreTrainedTokenizerFast(tokenizer_object=bpe._tokenizer, eos_token="<|endoftext|>")
    fast.add_special_tokens({"eos_token": "<|endoftext|>"})
    fast.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=sorted(SHAPES))
def model_folder(request, tokenizer_folder, tmp_path_factory):
    folder = tmp_path_factory.mktemp(request.param)
    tokenizer = transformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(SHAPES[request.param](len(tokenizer)))
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return request.param, folder


def test_per_token_losses_equal_the_models_own_loss(model_folder):
    arch, folder = model_folder
    model, tokenizer = load_pretrained(f"hf:{folder}")
    ids = torch.from_numpy(tokenizer.encode(TEXT)[:48])[None]  # (1, 48)
    ours = token_losses(model, ids[:, :-1], ids[:, 1:])  # (1, 47)
    own = model.hf(input_ids=ids, labels=ids).loss  # mean over the 47 next-token predictions
    torch.testing.assert_close(ours.mean(), own, rtol=1e-5, atol=1e-5)
    assert model.config.n_layer == 2 and model.config.pos == f"hf:{folder}"


def test_the_heads_probe_reads_the_models_own_attention_weights(model_folder):
    arch, folder = model_folder
    model, tokenizer = load_pretrained(f"hf:{folder}")
    ids = torch.from_numpy(tokenizer.encode(TEXT)[:32])[None]
    seen = {}
    probe(model, ids, lambda layer, start, p: seen.setdefault(layer, (start, p)))
    own = model.hf(input_ids=ids, output_attentions=True).attentions
    assert sorted(seen) == [0, 1]
    for layer, (start, p) in seen.items():
        assert start == 0
        torch.testing.assert_close(p, own[layer].float())
        torch.testing.assert_close(p.sum(-1), torch.ones(p.shape[:-1]), rtol=1e-4, atol=1e-4)
    report = inspect_heads(f"hf:{folder}", length=32, samples=2)
    assert len(report["heads"]) == 2 * model.config.n_head
    assert all(0 <= h["span90"] < 32 and h["entropy"] >= 0 for h in report["heads"])
    assert (report["heads"][0]["slope"] is not None) == (arch == "bloom")


def bloom_reference_slopes(num_heads: int) -> list[float]:
    """transformers `models/bloom/modeling_bloom.py` (`_get_alibi_slopes`, as build_alibi_tensor uses it):
    closest_power_of_2 = 2 ** floor(log2(n)); base = 2 ** (-(2 ** -(log2(closest) - 3))); slopes =
    base ** arange(1, 1 + closest); if closest != n: extra_base = 2 ** (-(2 ** -(log2(2 * closest) - 3)));
    num_remaining = min(closest, n - closest); slopes += extra_base ** arange(1, 1 + 2 * num_remaining, 2)."""
    closest = 2 ** math.floor(math.log2(num_heads))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base**p for p in range(1, 1 + closest)]
    if closest != num_heads:
        extra_base = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra_base**p for p in range(1, 1 + 2 * min(closest, num_heads - closest), 2)]
    return slopes


def test_bloom_slopes_are_read_from_the_model(tokenizer_folder, tmp_path):
    config = SHAPES["bloom"](400)
    folder = tmp_path / "bloom"
    transformers.AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    transformers.AutoTokenizer.from_pretrained(tokenizer_folder).save_pretrained(folder)
    model, _ = load_pretrained(f"hf:{folder}")
    assert model.pos.describe(64)["slope"] == pytest.approx(bloom_reference_slopes(6), rel=1e-6)  # 6: not 2^k


def test_token_bytes_add_up_to_the_texts_bytes(tokenizer_folder):
    hf = transformers.AutoTokenizer.from_pretrained(tokenizer_folder)
    ids = hf(TEXT, add_special_tokens=False)["input_ids"]
    assert int(token_bytes(hf)[ids].sum()) == len(TEXT.encode())


def test_sentencepiece_pieces_count_their_space_and_byte_fallback_as_bytes():
    class Sentencepiece:  # what a Llama tokenizer answers, reduced to what token_bytes asks
        all_special_ids = [0]
        pieces = ["<s>", "\u2581the", "é", "<0x0A>", "\u2581東"]

        def __len__(self):
            return len(self.pieces)

        def convert_ids_to_tokens(self, ids):
            return [self.pieces[i] for i in ids]

    assert token_bytes(Sentencepiece()).tolist() == [0, 4, 2, 1, 4]


def test_eval_extrapolate_scores_a_pretrained_model_at_half_to_8x_its_context(model_folder, tmp_path, capsys,
                                                                              monkeypatch):
    arch, folder = model_folder
    out = tmp_path / "report.json"
    code, printed, _ = run_cli(["eval-extrapolate", f"hf:{folder}", "--max-tokens", "1024", "--quiet",
                                "--json", str(out)], capsys, monkeypatch)
    assert code in (0, None), printed
    [run] = json.loads(out.read_text())["runs"]
    rows = {r["length"]: r for r in run["results"]}
    assert sorted(rows) == [32, 64, 128, 256, 512] and run["train_len"] == 64 and run["data"] == "pydocs"
    assert all(math.isfinite(rows[n]["bpb"]) for n in (32, 64))
    learned = arch == "gpt2"
    assert all((rows[n].get("error") is not None) == learned for n in (128, 256, 512)), arch


def test_clear_errors_for_a_missing_extra_a_missing_model_and_compare(tmp_path, capsys, monkeypatch):
    with pytest.raises(PosbenchError, match="cannot load hf:"):
        load_pretrained(f"hf:{tmp_path / 'nothing-here'}")
    monkeypatch.setattr(load, "transformers", None)
    with pytest.raises(PosbenchError, match=r"pip install 'posbench\[hf\]'"):
        load_pretrained("hf:gpt2")
    code, _, err = run_cli(["compare", "hf:gpt2"], capsys, monkeypatch)
    assert code == 2 and "eval-extrapolate hf:A hf:B" in err
