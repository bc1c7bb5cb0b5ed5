"""Needle-in-a-haystack variants of RULER (Hsieh et al. 2024, NVIDIA/RULER `scripts/data/synthetic/
niah.py`: several needles with distinct keys, several values for one key, several keys queried),
sized for the CPU: needles KEY k v1 v2 (k a key symbol, v two digits) at uniformly random places in
filler; the answer follows the query. Unlike passkey, every needle has a marker, so a needle is
found by its key, not by being the only marked place."""

from __future__ import annotations

import numpy as np

from .common import BOS, DIGITS, KEY, NEEDLE_KEYS, QUERY, SEP, Instance, scatter, sym

NEEDLES = 3  # needles per instance (multikey, multiquery)
VALUES = 3  # values of the one key (multivalue), one digit each
VALUE_DIGITS = 2


def _keys(rng: np.random.Generator, n: int) -> np.ndarray:
    return sym(rng.choice(np.arange(NEEDLE_KEYS.start, NEEDLE_KEYS.stop), n, replace=False))


def _digits(rng: np.random.Generator, n: int) -> np.ndarray:
    return sym(rng.integers(0, DIGITS, n))


def make_multikey(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """NEEDLES needles of distinct keys; QUERY k -> k's two digits (the others are distractors)."""
    keys, values = _keys(rng, NEEDLES), _digits(rng, (NEEDLES, VALUE_DIGITS))
    pieces = [np.concatenate([[KEY, k], v]) for k, v in zip(keys, values, strict=True)]
    room = length - 1 - NEEDLES * (2 + VALUE_DIGITS) - 2 - VALUE_DIGITS
    q = int(rng.integers(0, NEEDLES))
    tokens = np.concatenate([[BOS], scatter(rng, pieces, room), [QUERY, keys[q]], values[q]])
    return Instance(tokens, length - VALUE_DIGITS)


def make_multivalue(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """VALUES needles KEY k v (one digit each) of one key, one distractor KEY k' v'; QUERY k -> all of
    k's values in the order they appear."""
    k, other = _keys(rng, 2)
    values, wrong = _digits(rng, VALUES), _digits(rng, 1)
    pieces = [np.array([KEY, k, v]) for v in values]
    at = int(rng.integers(0, VALUES + 1))  # the distractor's place among them
    pieces.insert(at, np.array([KEY, other, wrong[0]]))
    room = length - 1 - 3 * (VALUES + 1) - 2 - VALUES
    tokens = np.concatenate([[BOS], scatter(rng, pieces, room), [QUERY, k], values])
    return Instance(tokens, length - VALUES)


def make_multiquery(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """NEEDLES needles of distinct keys; QUERY k1 k2 SEP -> k1's digits, then k2's."""
    keys, values = _keys(rng, NEEDLES), _digits(rng, (NEEDLES, VALUE_DIGITS))
    pieces = [np.concatenate([[KEY, k], v]) for k, v in zip(keys, values, strict=True)]
    room = length - 1 - NEEDLES * (2 + VALUE_DIGITS) - 4 - 2 * VALUE_DIGITS
    a, b = rng.choice(NEEDLES, 2, replace=False)
    tokens = np.concatenate([[BOS], scatter(rng, pieces, room), [QUERY, keys[a], keys[b], SEP], values[a], values[b]])
    return Instance(tokens, length - 2 * VALUE_DIGITS)


MIN_LEN = {  # no filler at all
    "multikey": 1 + NEEDLES * (2 + VALUE_DIGITS) + 2 + VALUE_DIGITS,
    "multivalue": 1 + 3 * (VALUES + 1) + 2 + VALUES,
    "multiquery": 1 + NEEDLES * (2 + VALUE_DIGITS) + 4 + 2 * VALUE_DIGITS,
}
