"""Selective copy (Gu & Dao 2023, *Mamba*, Sec. 3.1; the task CoPE, Golovneva et al. 2024, Sec. 5.2,
solves where token-count positions fail): COPIED content symbols scattered among blanks, then SEP and
the content symbols in their order. Longer instances add blanks, never content: the model must count
the tokens that matter, not tokens."""

from __future__ import annotations

import numpy as np

from .common import BOS, NEEDLE_KEYS, SEP, Instance, sym

COPIED = 4  # content symbols per instance, whatever its length
BLANK = sym(0)  # one blank symbol (symbol 0 is never content here: content comes from NEEDLE_KEYS)


def make_selective_copy(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    content = sym(rng.choice(np.arange(NEEDLE_KEYS.start, NEEDLE_KEYS.stop), COPIED, replace=False))
    room = length - 2 - 2 * COPIED  # BOS, the prompt's content and blanks, SEP, the answer
    slots = np.sort(rng.choice(room + COPIED, COPIED, replace=False))  # every placement equally likely
    prompt = np.full(room + COPIED, BLANK, dtype=np.int64)
    prompt[slots] = content
    return Instance(np.concatenate([[BOS], prompt, [SEP], content]).astype(np.int64), length - COPIED)


MIN_LEN = 2 + 2 * COPIED
