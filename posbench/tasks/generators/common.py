"""What every task generator shares: a small fixed vocabulary of ids (no tokenizer) and the Instance.
Every instance is [BOS] prompt answer; the loss and the score read the answer only."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PAD, BOS, SEP, QUERY, KEY = range(5)  # special ids; symbols follow
N_SPECIAL, N_SYMBOLS = 5, 128
VOCAB_SIZE = N_SPECIAL + N_SYMBOLS
ALPHABET = 16  # recall values: symbols 0..15
DIGITS = 10  # passkey key symbols (and other answers' digits): 0..9
FILLER = range(16, 32)  # passkey filler: symbols disjoint from the key's
RECALL_KEYS = range(16, N_SYMBOLS)  # recall keys, disjoint from its values: 112 distinct keys
NEEDLE_KEYS = range(32, N_SYMBOLS)  # needle keys and variable names: disjoint from digits and filler
PASSKEY_LEN = 4


def sym(i: np.ndarray | int) -> np.ndarray | int:
    """The token id of content symbol i."""
    return N_SPECIAL + i


@dataclass
class Instance:
    tokens: np.ndarray  # (n,) int64: BOS, prompt, answer
    answer_start: int  # index in tokens of the first answer token
    depth: float | None = None  # passkey: where the key sits in the filler, 0 (start) .. 1 (end)

    @property
    def answer(self) -> np.ndarray:
        return self.tokens[self.answer_start:]


def filler(rng: np.random.Generator, n: int) -> np.ndarray:
    """n random filler symbols (never a key, a digit or a marker)."""
    return sym(rng.integers(FILLER.start, FILLER.stop, n))


def scatter(rng: np.random.Generator, pieces: list[np.ndarray], room: int) -> np.ndarray:
    """The pieces in order among `room` filler symbols, every interleaving equally likely: the pieces
    take a uniformly random set of the room + len(pieces) slots (so each piece's slot is uniform)."""
    slots = np.zeros(room + len(pieces), dtype=bool)
    slots[rng.choice(len(slots), len(pieces), replace=False)] = True
    noise, next_piece, next_noise, out = filler(rng, room), iter(pieces), 0, []
    for is_piece in slots:
        if is_piece:
            out.append(next(next_piece))
        else:
            out.append(noise[next_noise : next_noise + 1])
            next_noise += 1
    return np.concatenate(out).astype(np.int64) if out else np.zeros(0, dtype=np.int64)
