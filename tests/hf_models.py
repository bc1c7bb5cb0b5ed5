"""Tiny randomly initialised Hugging Face causal LMs of several architectures, saved as local folders
(config, weights, tokenizer) the way a downloaded checkpoint is: what the pretrained tests load with
`hf:FOLDER`, with no network. Two tokenizers trained on the test corpus: byte-level BPE (GPT-2,
GPT-NeoX, BLOOM) and sentencepiece-style BPE with byte fallback (Llama 2)."""

import json
import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # before transformers reads it: no test reaches the hub

import torch  # noqa: E402
import transformers  # noqa: E402
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers  # noqa: E402

CONTEXT = 64  # every tiny model's trained context (GPT-2's learned table holds this many positions)
VOCAB = 320  # embedding rows: more than either tokenizer's pieces
SPACE = "\u2581"


def byte_level_tokenizer(text: str, vocab: int = 300):
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=vocab, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=["<|endoftext|>"],
        show_progress=False))
    return transformers.PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|endoftext|>")


def sentencepiece_tokenizer(text: str, vocab: int = 60):
    """Llama 2's layout: "▁" for a space, <0x00>..<0xFF> pieces for bytes it has no piece for, and
    the decoder Replace("▁", " "), ByteFallback, Fuse (no dummy prefix, so pieces spell the text)."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE, prepend_scheme="never")
    tok.train_from_iterator([text], trainers.BpeTrainer(vocab_size=vocab, special_tokens=["<unk>", "<s>", "</s>"],
                                                        show_progress=False))
    spec = json.loads(tok.to_str())
    table = spec["model"]["vocab"]
    for b in range(256):
        table.setdefault(f"<0x{b:02X}>", len(table))
    spec["model"]["byte_fallback"] = True
    spec["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": SPACE}, "content": " "}, {"type": "ByteFallback"}, {"type": "Fuse"}]}
    return transformers.PreTrainedTokenizerFast(tokenizer_object=Tokenizer.from_str(json.dumps(spec)),
                                                unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def configs() -> dict:
    small = dict(vocab_size=VOCAB, bos_token_id=0, eos_token_id=0)
    return {
        "gpt2": transformers.GPT2Config(n_positions=CONTEXT, n_embd=32, n_layer=2, n_head=4, **small),
        "gpt_neox": transformers.GPTNeoXConfig(max_position_embeddings=CONTEXT, hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=4, intermediate_size=64, rotary_pct=0.5, **small),
        # BLOOM's own config names no context (architectures.TRAINED_CONTEXT); this one records it
        "bloom": transformers.BloomConfig(hidden_size=32, n_layer=2, n_head=4, seq_length=CONTEXT, **small),
        "llama": transformers.LlamaConfig(max_position_embeddings=CONTEXT, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, num_key_value_heads=2, intermediate_size=64, **small),
    }


ARCHITECTURES = tuple(configs())


def save_model(folder, config, tokenizer, seed: int = 0) -> str:
    """A model of `config` with random weights (wider than HF's init, so attention is far from
    uniform), saved with its tokenizer; returns the `hf:` spec of the folder."""
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.3)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return f"hf:{folder}"


def build_models(root, text: str) -> dict[str, str]:
    """architecture -> hf:FOLDER; Llama with the sentencepiece-style tokenizer, the others byte-level."""
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    byte_level, pieces = byte_level_tokenizer(text), sentencepiece_tokenizer(text)
    return {name: save_model(root / name, config, pieces if name == "llama" else byte_level)
            for name, config in configs().items()}


def own_model(spec: str, **kwargs):
    """The model as transformers itself loads the folder: what expectations are computed with."""
    return transformers.AutoModelForCausalLM.from_pretrained(spec.removeprefix("hf:"), **kwargs).eval()

