"""Associative recall (Ba et al. 2016, as used by Fu et al. 2023, H3, and Arora et al. 2023, Zoology)."""

from __future__ import annotations

import numpy as np

from .common import ALPHABET, BOS, QUERY, RECALL_KEYS, Instance, sym


def make_recall(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """BOS k1 v1 ... kp vp QUERY kq vq: distinct keys, the query one of them, the answer its value."""
    pairs = (length - 4) // 2
    keys = sym(rng.choice(np.arange(RECALL_KEYS.start, RECALL_KEYS.stop), pairs, replace=False))
    values = sym(rng.integers(0, ALPHABET, pairs))
    q = rng.integers(0, pairs)
    body = np.stack([keys, values], axis=1).reshape(-1)
    return Instance(np.concatenate([[BOS], body, [QUERY, keys[q], values[q]]]), 2 * pairs + 3)
