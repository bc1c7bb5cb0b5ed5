"""Variable tracking (RULER, Hsieh et al. 2024, `scripts/data/synthetic/variable_tracking.py`): chains
of assignments x1 = v, x2 = x1, x3 = x2 hidden in filler, with a distractor chain of another value;
the query names the last variable of one chain, the answer is its value (multi-hop tracing)."""

from __future__ import annotations

import numpy as np

from .common import ALPHABET, BOS, KEY, NEEDLE_KEYS, QUERY, Instance, scatter, sym

CHAIN = 3  # variables per chain: two hops from the value to the queried one
CHAINS = 2  # the queried chain and a distractor


def make_variables(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """Assignments KEY x y (x takes y: a value symbol or an earlier variable), each chain in order,
    the chains interleaved at random; QUERY x -> the value that reached x."""
    names = sym(rng.choice(np.arange(NEEDLE_KEYS.start, NEEDLE_KEYS.stop), CHAINS * CHAIN, replace=False))
    values = sym(rng.choice(ALPHABET, CHAINS, replace=False))
    chains = []
    for c in range(CHAINS):
        x = names[c * CHAIN : (c + 1) * CHAIN]
        chains.append([np.array([KEY, x[0], values[c]])] + [np.array([KEY, x[i], x[i - 1]]) for i in range(1, CHAIN)])
    order = rng.permutation(np.repeat(np.arange(CHAINS), CHAIN))  # which chain each next assignment comes from
    taken = [0] * CHAINS
    pieces = []
    for c in order:
        pieces.append(chains[c][taken[c]])
        taken[c] += 1
    q = int(rng.integers(0, CHAINS))
    room = length - 1 - 3 * CHAIN * CHAINS - 3
    tokens = np.concatenate([[BOS], scatter(rng, pieces, room), [QUERY, names[q * CHAIN + CHAIN - 1], values[q]]])
    return Instance(tokens, length - 1)


MIN_LEN = 1 + 3 * CHAIN * CHAINS + 3
