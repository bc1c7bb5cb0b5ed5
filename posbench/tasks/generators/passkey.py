"""Passkey retrieval (Mohtashami & Jaggi 2023, *Landmark Attention*: a key hidden in filler at a
chosen depth)."""

from __future__ import annotations

import numpy as np

from .common import BOS, DIGITS, FILLER, KEY, PASSKEY_LEN, QUERY, Instance, sym


def make_passkey(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """BOS filler KEY k1..k4 filler QUERY k1..k4; `depth` (None: uniform) is the fraction of the filler
    before the key. Filler is random symbols, not one repeated token, so the key must be found by its marker."""
    filler = length - 3 - 2 * PASSKEY_LEN
    # uniform: every one of the filler + 1 places equally likely (rounding U * filler would give the two
    # ends half the weight of the others)
    before = int(rng.integers(0, filler + 1)) if depth is None else int(round(depth * filler))
    key = sym(rng.integers(0, DIGITS, PASSKEY_LEN))
    noise = sym(rng.integers(FILLER.start, FILLER.stop, filler))
    tokens = np.concatenate([[BOS], noise[:before], [KEY], key, noise[before:], [QUERY], key])
    return Instance(tokens, length - PASSKEY_LEN, before / max(filler, 1))
