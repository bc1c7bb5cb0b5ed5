"""Pretrained models (hf:MODEL) against transformers itself, on tiny random models of four architectures
saved as local folders (tests/hf_models.py): posbench's per-token losses are the model's own loss on the
same windows, the heads probe's weights its returned attentions, BLOOM's slopes its own formula."""

import math
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # noqa: E402 (before transformers is imported)

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

pytest.importorskip("transformers")

from posbench.data.corpora import load_corpus  # noqa: E402
from posbench.errors import LengthError, PosbenchError  # noqa: E402
from posbench.evaluation.extrapolate import EvalSettings  # noqa: E402
from posbench.evaluation.heads import probe, spread_windows  # noqa: E402
from posbench.pretrained.architectures import trained_context  # noqa: E402
from posbench.pretrained.evaluate import default_lengths, evaluate_model  # noqa: E402
from posbench.pretrained.heads import inspect_model_heads  # noqa: E402
from posbench.pretrained.hub import load_model, load_tokenizer  # noqa: E402
from posbench.pretrained.tokens import encode, token_bytes  # noqa: E402

from .hf_models import ARCHITECTURES, own_model  # noqa: E402


def windows_of(w, mode: str, length: int):
    """(input start, end, first scored) of each scored window: a non-overlapping one starts at its
    first prediction, a sliding one `length` before its end (a block's first, at the block's start),
    a context-use one `length` before its end."""
    block_first = {b: w.first[w.block == b].min() for b in np.unique(w.block)}
    ends = w.first + w.tokens
    starts = {"nonoverlapping": lambda b, e, f: f, "context": lambda b, e, f: e - length,
              "sliding": lambda b, e, f: max(block_first[b], e - length)}[mode]
    return [(int(starts(b, e, f)), int(e), int(f)) for b, e, f in zip(w.block, ends, w.first, strict=True)]


def assert_own_losses(spec: str, windows: dict, corpus_path: str) -> None:
    """Each window's summed loss is transformers' own loss (labels=, the scored targets only) on the
    same tokens times the number of targets it scored."""
    model = own_model(spec)
    ids = torch.from_numpy(encode(load_tokenizer(spec), load_corpus(corpus_path).splits["valid"]))
    for (mode, length), w in windows.items():
        for (start, end, first), loss in zip(windows_of(w, mode, length), w.loss, strict=True):
            x = ids[start : end + 1][None]  # inputs start..end-1 and the last target
            labels = x.clone()
            labels[0, : first - start + 1] = -100  # transformers shifts: label j is the target of input j - 1
            own = model(input_ids=x, labels=labels).loss.item() * (end - first)
            assert math.isclose(loss, own, rel_tol=1e-5, abs_tol=1e-4), (spec, mode, length, start)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_losses_are_the_models_own_loss(arch, tiny, corpus_path):
    """Every window's summed loss, non-overlapping and sliding, is the model's own loss on it."""
    settings = EvalSettings(lengths=[16, 32], mode="both", stride=8, data=corpus_path, max_tokens=128,
                            context_use=False)
    _, windows = evaluate_model(tiny[arch], settings)
    assert {mode for mode, _ in windows} == {"nonoverlapping", "sliding"}
    assert_own_losses(tiny[arch], windows, corpus_path)


@pytest.mark.parametrize("arch", ["gpt_neox", "bloom", "llama"])  # (GPT-2's table ends at the context)
def test_context_use_losses_are_the_models_own(arch, tiny, corpus_path):
    settings = EvalSettings(lengths=[64, 96], data=corpus_path, max_tokens=64)
    report, windows = evaluate_model(tiny[arch], settings)
    assert [r["length"] for r in report["context_use"]] == [64, 96]
    assert_own_losses(tiny[arch], {k: w for k, w in windows.items() if k[0] == "context"}, corpus_path)


@pytest.mark.parametrize("arch", ARCHITECTURES)
def test_heads_probe_reads_the_models_own_attentions(arch, tiny):
    spec = tiny[arch]
    adapter = load_model(spec, attention="eager")
    idx = torch.randint(0, 250, (2, 24), generator=torch.Generator().manual_seed(0))
    seen = {}
    probe(adapter, idx, lambda layer, start, p: seen.setdefault(layer, (start, p)))
    own = own_model(spec, attn_implementation="eager")(idx, output_attentions=True).attentions
    assert sorted(seen) == list(range(len(own)))
    for layer, (start, p) in seen.items():
        assert start == 0 and p.shape == own[layer].shape
        torch.testing.assert_close(p, own[layer].float(), rtol=0, atol=1e-6)


def test_a_model_without_attention_weights_is_a_clear_error(tiny):
    adapter = load_model(tiny["llama"], attention="sdpa")  # SDPA never forms the weights
    with pytest.raises(PosbenchError, match="returns no attention weights.*eager"):
        probe(adapter, torch.zeros(1, 8, dtype=torch.long), lambda *_: None)


def bloom_slopes(n_head: int) -> list[float]:
    """transformers' modeling_bloom.py _get_alibi_slopes (Press et al.'s geometric slopes, the
    interleaved extra ones for a head count that is not a power of 2), transcribed."""
    closest = 2 ** math.floor(math.log2(n_head))
    base = 2 ** (-(2 ** -(math.log2(closest) - 3)))
    slopes = [base**k for k in range(1, closest + 1)]
    if closest != n_head:
        extra = 2 ** (-(2 ** -(math.log2(2 * closest) - 3)))
        slopes += [extra**k for k in range(1, 1 + 2 * min(closest, n_head - closest), 2)]
    return slopes


@pytest.mark.parametrize("n_head", [4, 6])
def test_bloom_slopes_are_read_from_the_model(n_head, tmp_path, corpus_path):
    import transformers

    from .hf_models import byte_level_tokenizer, save_model

    config = transformers.BloomConfig(vocab_size=320, hidden_size=6 * 8, n_layer=1, n_head=n_head, seq_length=64)
    spec = save_model(tmp_path / "bloom", config, byte_level_tokenizer(open(corpus_path).read()))
    assert load_model(spec).pos.describe(64)["slope"] == pytest.approx(bloom_slopes(n_head), rel=1e-6)


def mpt_slopes(n_head: int, alibi_bias_max: int = 8) -> list[float]:
    """transformers' modeling_mpt.py build_mpt_alibi_tensor (MosaicML's attention.py), transcribed:
    2^(-k * max / H') for k = 1..H' (H' the next power of 2), odd ones first when H' > H."""
    padded = 2 ** math.ceil(math.log2(n_head))
    slopes = [2 ** (-k * alibi_bias_max / padded) for k in range(1, padded + 1)]
    return slopes if padded == n_head else (slopes[1::2] + slopes[::2])[:n_head]


@pytest.mark.parametrize("n_head", [4, 6])
def test_falcon_and_mpt_slopes(n_head):
    import transformers

    from posbench.pretrained.architectures import alibi_slopes

    def build(config):
        return transformers.AutoModelForCausalLM.from_config(config)

    small = dict(vocab_size=320, hidden_size=48, num_attention_heads=n_head, num_hidden_layers=1)
    falcon = build(transformers.FalconConfig(alibi=True, **small))  # modeling_falcon.py: BLOOM's formula
    assert alibi_slopes(falcon) == pytest.approx(bloom_slopes(n_head), rel=1e-2)  # (rounded to bf16 there)
    assert alibi_slopes(build(transformers.FalconConfig(alibi=False, **small))) is None  # rotary Falcon
    mpt = build(transformers.MptConfig(vocab_size=320, d_model=48, n_heads=n_head, n_layers=1, max_seq_len=64))
    assert alibi_slopes(mpt) == pytest.approx(mpt_slopes(n_head), rel=1e-6)


def test_inspect_heads_of_an_alibi_model(tiny, corpus_path):
    """The report's sink is the mean attention on key 0 of the model's own weights; slopes and their
    correlation with the span come as for posbench's alibi runs."""
    report = inspect_model_heads(tiny["bloom"], length=32, samples=3, data=corpus_path)
    assert report["pos"] == "hf:bloom" and report["summary"]["samples"] == 3
    layer0 = report["summary"]["layers"][0]
    assert "spearman_slope_span90" in layer0 and len(layer0["spearman_slope_span90_ci"]) == 2
    assert [h["slope"] for h in report["heads"] if h["layer"] == 0] == pytest.approx(bloom_slopes(4))
    ids = encode(load_tokenizer(tiny["bloom"]), load_corpus(corpus_path).splits["valid"])
    windows = spread_windows(ids, "valid", 32, 3)  # where the probe's windows sit (not what it measures)
    own = own_model(tiny["bloom"], attn_implementation="eager")(windows, output_attentions=True).attentions
    for h in report["heads"]:
        assert h["sink"] == pytest.approx(own[h["layer"]][:, h["head"], :, 0].mean().item(), rel=1e-5)


def test_byte_counts_add_up_to_the_text(tiny):
    """Every piece's bytes: over a text they add up to its UTF-8 bytes, for byte-level BPE and for
    sentencepiece pieces with byte fallback (multi-byte characters included)."""
    text = "the method trains short and tests long.\n  naïve café — 東京 x\n"
    for arch in ("gpt2", "llama"):
        tokenizer = load_tokenizer(tiny[arch])
        ids = encode(tokenizer, text)
        assert tokenizer.decode(ids.tolist()) == text  # the pieces spell the text...
        assert token_bytes(tokenizer, 320)[ids].sum() == len(text.encode())  # ...and their bytes add up


def test_learned_table_and_out_of_memory_are_that_lengths_na(tiny, corpus_path, monkeypatch):
    import transformers

    settings = EvalSettings(lengths=[32, 64, 128], data=corpus_path, max_tokens=256)
    report, _ = evaluate_model(tiny["gpt2"], settings)
    errors = {r["length"]: r.get("error") for r in report["results"]}
    assert errors[32] is None and errors[64] is None and "past its table" in errors[128]

    forward = transformers.LlamaForCausalLM.forward

    def short_memory(self, input_ids=None, **kwargs):  # a device that holds windows of 32 tokens at most
        if input_ids.size(1) > 32:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(self, input_ids=input_ids, **kwargs)

    monkeypatch.setattr(transformers.LlamaForCausalLM, "forward", short_memory)
    report, _ = evaluate_model(tiny["llama"], settings)
    by_length = {r["length"]: r for r in report["results"]}
    assert by_length[32]["ppl"] is not None
    assert by_length[64]["ppl"] is None and by_length[64]["error"].startswith("out of memory")
    assert all(r["ppl"] is None for r in report["context_use"] if r["length"] > 32)


def test_weights_that_do_not_fit_are_one_line(tiny, monkeypatch):
    import transformers

    def no_room(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_room)
    with pytest.raises(PosbenchError, match="does not fit in memory on cpu"):
        load_model(tiny["llama"])


def test_default_lengths_and_trained_context(tiny):
    assert default_lengths(1024) == [512, 1024, 2048, 4096, 8192]  # the trained context × 1/2 ... 8
    assert default_lengths(1024, 3000) == [512, 1024, 2048, 3000]
    import transformers

    assert trained_context(transformers.BloomConfig()) == 2048  # BLOOM paper; its config names none
    assert trained_context(transformers.GPT2Config(n_positions=777)) == 777
    with pytest.raises(LengthError, match="past its table"):
        load_model(tiny["gpt2"]).check_length(65)


def test_bf16_weights(tiny, corpus_path):
    settings = EvalSettings(lengths=[32], data=corpus_path, max_tokens=128, context_use=False)
    fp32, _ = evaluate_model(tiny["llama"], settings)
    bf16, _ = evaluate_model(tiny["llama"], settings, precision="bf16")
    assert bf16["model"]["dtype"] == "bfloat16" and fp32["model"]["dtype"] == "float32"
    assert bf16["results"][0]["ppl"] == pytest.approx(fp32["results"][0]["ppl"], rel=0.05)
