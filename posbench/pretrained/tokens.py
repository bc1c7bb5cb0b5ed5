"""A corpus in a pretrained model's own tokens, and the UTF-8 bytes of each of its pieces (what bits
per byte divide by, so models with different tokenizers compare).

A piece's bytes follow its tokenizer's decoder (read from the tokenizer's own JSON): byte-level BPE
(GPT-2, GPT-NeoX, BLOOM, Llama 3) spells every byte as one character of GPT-2's byte alphabet;
sentencepiece-style pieces (Llama 2, Mistral) write a space as "▁" and an unknown byte as <0xNN>;
added tokens are their own text; special tokens hold no text.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import numpy as np

from ..data.corpora import load_corpus
from ..errors import PosbenchError

if TYPE_CHECKING:  # transformers is optional: named in annotations only
    from transformers import PreTrainedTokenizerBase

SPACE = "\u2581"  # sentencepiece's word-start mark
BYTE_MISMATCH = 0.001  # a note when the pieces' bytes and the text's differ by more than this fraction


def byte_alphabet() -> dict[str, int]:
    """Character -> byte of byte-level BPE: printable bytes stand for themselves, the other 68 for
    chr(256 + k) in byte order (GPT-2's encoder.py bytes_to_unicode, which transformers copies)."""
    own = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in own]
    return {chr(b): b for b in own} | {chr(256 + k): b for k, b in enumerate(others)}


def decoder_kind(tokenizer: PreTrainedTokenizerBase) -> str:
    """'bytelevel', 'sentencepiece' or 'text' (anything else: each piece decoded alone) from the
    decoder of a fast tokenizer's JSON (tokenizers' decoders: ByteLevel; Metaspace, or a Sequence of
    Replace("▁", " "), ByteFallback, ...)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = json.loads(backend.to_str()).get("decoder") if backend is not None else None
    parts = (decoder or {}).get("decoders") or [decoder or {}]
    types = {part.get("type") for part in parts}
    if "ByteLevel" in types:
        return "bytelevel"
    replaces_space = any(p.get("type") == "Replace" and SPACE in json.dumps(p, ensure_ascii=False) for p in parts)
    if "Metaspace" in types or replaces_space:
        return "sentencepiece"
    return "text"


def _piece_bytes(piece: str, kind: str, alphabet: dict[str, int], tokenizer: PreTrainedTokenizerBase) -> int:
    if kind == "bytelevel":
        return sum(1 if c in alphabet else len(c.encode()) for c in piece)
    if kind == "sentencepiece":
        if len(piece) == 6 and piece.startswith("<0x") and piece.endswith(">"):
            return 1  # byte fallback
        return len(piece.replace(SPACE, " ").encode())
    return len(tokenizer.convert_tokens_to_string([piece]).encode())


def token_bytes(tokenizer: PreTrainedTokenizerBase, size: int) -> np.ndarray:
    """(size,) UTF-8 bytes of every token id (0 for special tokens and for ids past the tokenizer,
    e.g. an embedding table padded to a multiple of 128)."""
    kind, alphabet = decoder_kind(tokenizer), byte_alphabet()
    n = len(tokenizer)
    pieces = tokenizer.convert_ids_to_tokens(list(range(n)))
    added = getattr(tokenizer, "added_tokens_decoder", {})
    special = set(tokenizer.all_special_ids)
    out = np.zeros(max(size, n), dtype=np.int64)
    for i, piece in enumerate(pieces):
        if i in special or piece is None or (i in added and getattr(added[i], "special", False)):
            continue
        out[i] = len(added[i].content.encode()) if i in added else _piece_bytes(piece, kind, alphabet, tokenizer)
    return out


def encode(tokenizer: PreTrainedTokenizerBase, text: str) -> np.ndarray:
    """The model's token ids of `text` (int64), no BOS or EOS added: windows start mid-text, as posbench's own."""
    ids = tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"]
    return np.asarray(ids, dtype=np.int64)


def held_out(tokenizer: PreTrainedTokenizerBase, data: str, split: str, vocab_size: int, name: str
             ) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(token ids, bytes per token id, notes) of a corpus's held-out split in the model's tokens. A
    note says when the pieces' bytes do not add up to the text's (a tokenizer that normalises the
    text: bits per byte are then per byte of what it kept)."""
    text = load_corpus(data).splits[split]
    tokens = encode(tokenizer, text)
    if tokens.size and int(tokens.max()) >= vocab_size:
        raise PosbenchError(f"{name}'s tokenizer gives ids up to {int(tokens.max())} but the model has "
                            f"{vocab_size} embeddings; the tokenizer does not belong to this model")
    sizes = token_bytes(tokenizer, vocab_size)
    counted, actual = int(sizes[tokens].sum()), len(text.encode())
    notes = []
    if actual and abs(counted - actual) > BYTE_MISMATCH * actual:
        notes.append(f"{name}'s pieces spell {counted:,} bytes of the {split} split's {actual:,} "
                     "(the tokenizer normalises the text); bits per byte count the pieces' bytes")
    return tokens, sizes, notes
