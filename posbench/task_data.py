"""Synthetic tasks for length generalisation, generated on the fly and deterministic given a seed:
copy, reverse, passkey retrieval and associative recall over a small fixed vocabulary of ids (no
tokenizer). Every instance is [BOS] prompt answer; the loss and the score read the answer only.

copy and reverse follow Kazemnejad et al. 2023 (*The Impact of Positional Encoding on Length
Generalization in Transformers*) and Ruoss et al. 2023; passkey follows Mohtashami & Jaggi 2023
(*Landmark Attention*: a key hidden in filler at a chosen depth); recall is the associative recall
of Ba et al. 2016 as used by Fu et al. 2023 (H3) and Arora et al. 2023 (Zoology)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .errors import PosbenchError
from .positions import POSITION_SEED_OFFSET, PositionDraw

IGNORE = -100  # F.cross_entropy's default ignore_index: targets that carry no loss
PAD, BOS, SEP, QUERY, KEY = range(5)  # special ids; symbols follow
N_SPECIAL, N_SYMBOLS = 5, 128
VOCAB_SIZE = N_SPECIAL + N_SYMBOLS
ALPHABET = 16  # recall values: symbols 0..15
DIGITS = 10  # passkey key symbols: 0..9
FILLER = range(16, 32)  # passkey filler: symbols disjoint from the key's
RECALL_KEYS = range(16, N_SYMBOLS)  # recall keys, disjoint from its values: 112 distinct keys
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


def make_recall(rng: np.random.Generator, length: int, depth: float | None = None) -> Instance:
    """BOS k1 v1 ... kp vp QUERY kq vq: distinct keys, the query one of them, the answer its value."""
    pairs = (length - 4) // 2
    keys = sym(rng.choice(np.arange(RECALL_KEYS.start, RECALL_KEYS.stop), pairs, replace=False))
    values = sym(rng.integers(0, ALPHABET, pairs))
    q = rng.integers(0, pairs)
    body = np.stack([keys, values], axis=1).reshape(-1)
    return Instance(np.concatenate([[BOS], body, [QUERY, keys[q], values[q]]]), 2 * pairs + 3)


@dataclass(frozen=True)
class Task:
    make: Callable[[np.random.Generator, int, float | None], Instance]
    min_len: int  # shortest instance the generator can make
    max_len: int  # longest (recall: distinct keys run out)
    chance: float  # per-token accuracy of a constant guess among the answer's symbols


TASKS: dict[str, Task] = {
    "copy": Task(make_copy, 4, 2 + 2 * N_SYMBOLS, 1 / N_SYMBOLS),
    "reverse": Task(make_reverse, 4, 2 + 2 * N_SYMBOLS, 1 / N_SYMBOLS),
    "passkey": Task(make_passkey, 3 + 2 * PASSKEY_LEN, 1 << 20, 1 / DIGITS),
    "recall": Task(make_recall, 6, 4 + 2 * len(RECALL_KEYS), 1 / ALPHABET),
}


def get_task(name: str, longest: int = 0) -> Task:
    if name not in TASKS:
        raise PosbenchError(f"unknown task '{name}'; choose from {', '.join(TASKS)}")
    task = TASKS[name]
    if longest > task.max_len:
        raise PosbenchError(f"task {name} makes instances of at most {task.max_len} tokens, not {longest}")
    return task


def collate(instances: Sequence[Instance]) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, y): x = tokens[:-1] right-padded with PAD (causal attention never sees the padding of a
    shorter instance), y = the next token on answer positions, IGNORE everywhere else."""
    width = max(len(i.tokens) for i in instances) - 1
    x = np.full((len(instances), width), PAD, dtype=np.int64)
    y = np.full((len(instances), width), IGNORE, dtype=np.int64)
    for row, inst in enumerate(instances):
        n = len(inst.tokens) - 1
        x[row, :n] = inst.tokens[:-1]
        y[row, inst.answer_start - 1:n] = inst.tokens[inst.answer_start:]
    return torch.from_numpy(x), torch.from_numpy(y)


def eval_seed(seed: int, length: int, depth: float | None) -> list[int]:
    """The seed of one evaluation set: 7919 keeps it apart from training's, and the uniform-depth set
    (0) apart from every fixed depth's (1 + 1000 depth)."""
    return [seed, length, 0 if depth is None else 1 + round(1000 * depth), 7919]


def eval_batch(task: str, length: int, n: int, seed: int, depth: float | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """n fresh instances of exactly `length` tokens (x, y as collate), the same for every model."""
    rng = np.random.default_rng(eval_seed(seed, length, depth))
    make = get_task(task, length).make
    return collate([make(rng, length, depth) for _ in range(n)])


def answer_hits(logits: torch.Tensor, y: torch.Tensor) -> tuple[int, int, int]:
    """(instances whose every answer token is the argmax, answer tokens right, answer tokens) of a
    teacher-forced pass. Exact match under teacher forcing equals greedy decoding's: a greedy decode
    is all right exactly when every teacher-forced step is."""
    mask = y != IGNORE
    right = (logits.argmax(-1) == y) & mask
    exact = (right | ~mask).all(dim=1)
    return int(exact.sum()), int(right.sum()), int(mask.sum())


class TaskSampler:
    """Training batches of one task for train(): lengths uniform over [min_len, max_len] (every length
    up to the training maximum, as Kazemnejad et al. 2023 train), one per batch; loss on answers.

    With max_position (randomized positions, Ruoss et al. 2023) each batch also gets sorted distinct
    position ids from [0, max_position), one set per batch as the reference draws them."""

    def __init__(self, task: str, max_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 min_len: int | None = None, max_position: int | None = None) -> None:
        self.task, self.name = get_task(task, max_len), task
        self.min_len = max(min_len or 0, self.task.min_len)
        if max_len < self.min_len or batch_size < 1:
            raise PosbenchError(f"task {task} needs a training length >= {self.min_len} and a positive batch size")
        self.max_len, self.batch_size, self.rank, self.world_size = max_len, batch_size, rank, world_size
        self.rng = np.random.default_rng(seed)
        # its own stream (as BatchSampler's): the instances are the same with the option on or off
        self.draw = None if max_position is None else PositionDraw(max_position, seed + POSITION_SEED_OFFSET)
        self.length = self.max_len

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        # one length per batch: no padding, so a step costs what its instances need (about half of
        # padding every batch to max_len); every rank draws the same global batch and keeps its slice
        length = int(self.rng.integers(self.min_len, self.max_len + 1))
        instances = [self.task.make(self.rng, length) for _ in range(self.batch_size * self.world_size)]
        x, y = collate(instances[self.rank * self.batch_size:(self.rank + 1) * self.batch_size])
        self.length = x.size(1)  # the input tokens next_positions gives ids for
        return x, y

    def describe(self) -> dict:
        """What config.json records as the run's data (and what makes two task runs the same run)."""
        return {"task": self.name, "min_len": self.min_len, "max_len": self.max_len, "vocab_size": VOCAB_SIZE}

    def next_positions(self) -> torch.Tensor | None:
        """(T,) position ids of the batch next_batch just gave, or None (0..T-1) without max_position."""
        return None if self.draw is None else self.draw(self.length)

    def state_dict(self) -> dict:
        state = {"rng": self.rng.bit_generator.state, "global_batch": self.batch_size * self.world_size}
        return state if self.draw is None else state | {"positions": self.draw.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.rng.bit_generator.state = state["rng"]
        if self.draw is not None and "positions" in state:
            self.draw.load_state_dict(state["positions"])
