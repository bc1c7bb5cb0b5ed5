"""Synthetic tasks for length generalisation, generated on the fly and deterministic given a seed,
over a small fixed vocabulary of ids (no tokenizer): the registry (TASKS), evaluation sets, batches
and scoring. Each task's generator is a file in generators/: copy and reverse, passkey
retrieval, associative recall, selective copy, and a RULER-sized retrieval suite (needles with several keys, values
or queries, variable tracking, counting). Every instance is [BOS] prompt answer; the loss and the
score read the answer only."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import PosbenchError
from ..positions import training_draw
from .generators import counting, needles, selective_copy, variables
from .generators.common import (
    ALPHABET,
    DIGITS,
    N_SYMBOLS,
    NEEDLE_KEYS,
    PAD,
    PASSKEY_LEN,
    RECALL_KEYS,
    VOCAB_SIZE,
    Instance,
)
from .generators.copy import make_copy, make_reverse
from .generators.passkey import make_passkey
from .generators.recall import make_recall

IGNORE = -100  # F.cross_entropy's default ignore_index: targets that carry no loss


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
    # the retrieval suite (RULER-sized for the CPU)
    "multikey": Task(needles.make_multikey, needles.MIN_LEN["multikey"], 1 << 20, 1 / DIGITS),
    "multivalue": Task(needles.make_multivalue, needles.MIN_LEN["multivalue"], 1 << 20, 1 / DIGITS),
    "multiquery": Task(needles.make_multiquery, needles.MIN_LEN["multiquery"], 1 << 20, 1 / DIGITS),
    "variables": Task(variables.make_variables, variables.MIN_LEN, 1 << 20, 1 / ALPHABET),
    "counting": Task(counting.make_counting, counting.MIN_LEN, 1 << 20, 1 / counting.MAX_COUNT),
    # content among blanks (Mamba's selective copy, CoPE's Sec. 5.2): more blanks past L, never more content
    "selective-copy": Task(selective_copy.make_selective_copy, selective_copy.MIN_LEN, 1 << 20,
                           1 / len(NEEDLE_KEYS)),
}
RETRIEVAL = ("passkey", "multikey", "multivalue", "multiquery", "variables", "counting")


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
    position ids from [0, max_position), one set per batch as the reference draws them; with pose
    (PoSE, Zhu et al. 2024) its two skipped chunks of ids reaching up to pose - 1."""

    def __init__(self, task: str, max_len: int, batch_size: int, seed: int, rank: int = 0, world_size: int = 1,
                 min_len: int | None = None, max_position: int | None = None, pose: int | None = None) -> None:
        self.task, self.name = get_task(task, max_len), task
        self.min_len = max(min_len or 0, self.task.min_len)
        if max_len < self.min_len or batch_size < 1:
            raise PosbenchError(f"task {task} needs a training length >= {self.min_len} and a positive batch size")
        self.max_len, self.batch_size, self.rank, self.world_size = max_len, batch_size, rank, world_size
        self.rng = np.random.default_rng(seed)
        # its own stream (as BatchSampler's): the instances are the same with the option on or off
        self.draw = training_draw(max_position, pose, seed)
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
