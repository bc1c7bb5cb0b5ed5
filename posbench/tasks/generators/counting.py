"""Counting (an aggregation, as RULER's common-words extraction and CoPE's counting task, Golovneva et al.
2024): c markers scattered in filler, c uniform in 1..MAX_COUNT whatever the length; QUERY -> c as
a digit. Counting needs every marker, however far back: a model that attends only nearby cannot."""

from __future__ import annotations

import numpy as np

from .common import BOS, KEY, QUERY, Instance, scatter, sym

MAX_COUNT = 9


def make_counting(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    count = int(rng.integers(1, MAX_COUNT + 1))
    room = length - 1 - count - 2
    tokens = np.concatenate([[BOS], scatter(rng, [np.array([KEY])] * count, room), [QUERY, sym(count)]])
    return Instance(tokens, length - 1)


MIN_LEN = 1 + MAX_COUNT + 2
