"""copy and reverse (Kazemnejad et al. 2023, *The Impact of Positional Encoding on Length
Generalization in Transformers*; Ruoss et al. 2023)."""

from __future__ import annotations

import numpy as np

from .common import BOS, N_SYMBOLS, SEP, Instance, sym


def _copy_like(rng: np.random.Generator, length: int, reverse: bool) -> Instance:
    """BOS s SEP s' (2m + 2 tokens), s of m distinct symbols: with repeats, copying is not a
    length-generalisable (RASP-L) program, with distinct symbols it is (Zhou et al. 2023, *What
    Algorithms can Transformers Learn?*), so failures past L are the position encoding's."""
    m = (length - 2) // 2
    s = sym(rng.choice(N_SYMBOLS, m, replace=False))
    answer = s[::-1] if reverse else s
    return Instance(np.concatenate([[BOS], s, [SEP], answer]), m + 2)


def make_copy(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    return _copy_like(rng, length, reverse=False)


def make_reverse(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    return _copy_like(rng, length, reverse=True)
