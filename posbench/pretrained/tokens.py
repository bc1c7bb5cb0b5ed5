"""A Hugging Face tokenizer as posbench's scoring reads one: encode(text) -> ids, and the UTF-8 bytes
of every token id (token_bytes), so bits per byte compare models whose tokenizers differ."""

from __future__ import annotations

import re

import numpy as np

SENTENCEPIECE_SPACE = "\u2581"  # "▁": sentencepiece's word boundary, one space byte
BYTE_TOKEN = re.compile(r"<0x[0-9A-Fa-f]{2}>")  # sentencepiece's byte fallback: one byte


def byte_level_alphabet() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet, character -> byte (openai/gpt-2 `encoder.py`, bytes_to_unicode):
    printable bytes stand for themselves, the other 68 for the characters 256, 257, ... in byte order."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars


def _is_byte_level(hf_tokenizer) -> bool:
    backend = getattr(hf_tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    return type(decoder).__name__ == "ByteLevel" or hasattr(hf_tokenizer, "byte_decoder")


def token_bytes(hf_tokenizer) -> np.ndarray:
    """(vocab,) UTF-8 bytes each token id stands for: byte-level BPE (GPT-2, GPT-NeoX, BLOOM) through
    its alphabet, sentencepiece (Llama) with "▁" as a space and <0xNN> as one byte; special tokens 0."""
    special = set(hf_tokenizer.all_special_ids)
    pieces = hf_tokenizer.convert_ids_to_tokens(list(range(len(hf_tokenizer))))
    alphabet = byte_level_alphabet() if _is_byte_level(hf_tokenizer) else None
    out = np.zeros(len(pieces), dtype=np.int64)
    for i, piece in enumerate(pieces):
        if i in special or piece is None:
            continue
        if alphabet is not None:
            out[i] = sum(1 for ch in piece if ch in alphabet)
        elif BYTE_TOKEN.fullmatch(piece):
            out[i] = 1
        else:
            out[i] = len(piece.replace(SENTENCEPIECE_SPACE, " ").encode())
    return out


class PretrainedTokenizer:
    """encode, token_bytes and vocab_size, as posbench's own Tokenizer offers them."""

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        self.vocab_size = len(hf_tokenizer)
        self.token_bytes = token_bytes(hf_tokenizer)

    def encode(self, text: str) -> np.ndarray:
        """The ids of `text`, no special tokens added (a held-out split is one long stream)."""
        ids = self.hf(text, add_special_tokens=False, verbose=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64)
