"""Position ids of one forward pass, shared by every sequence of the batch (so a score bias stays
(H, Tq, Tk), never per sequence).

The common case is a range start .. start+length-1 (training, a KV cache, a query chunk): it is
carried as two ints, so the methods memoise their tables by (start, length) as before explicit ids
existed. Explicit ids (randomized positions, Ruoss et al. 2023) are carried as a 1-D long tensor;
a chunk of them is a window (start, length) into that same tensor, so within one forward pass the
tensor's identity plus the window names the chunk."""

from __future__ import annotations

import torch

from ..errors import LengthError, PosbenchError


class Positions:
    """Positions start .. start+length-1, or, with `ids`, the window ids[start : start+length]."""

    __slots__ = ("ids", "length", "start")

    def __init__(self, start: int, length: int, ids: torch.Tensor | None = None) -> None:
        self.start, self.length, self.ids = start, length, ids

    @classmethod
    def explicit(cls, ids: torch.Tensor) -> Positions:
        """(T,) long tensor of absolute position ids."""
        if ids.ndim != 1 or ids.dtype != torch.long:
            raise PosbenchError(f"position ids must be a 1-D long tensor, got {tuple(ids.shape)} {ids.dtype}")
        return cls(0, ids.numel(), ids)

    @classmethod
    def of(cls, positions: Positions | torch.Tensor | None, start: int, length: int) -> Positions:
        """What GPT.forward accepts: None (the range start..start+length-1), a tensor of ids, Positions."""
        if positions is None:
            return cls(start, length)
        if isinstance(positions, torch.Tensor):
            positions = cls.explicit(positions)
        if len(positions) != length:
            raise PosbenchError(f"{len(positions)} position ids for {length} tokens")
        return positions

    def __len__(self) -> int:
        return self.length

    def __repr__(self) -> str:
        what = "range" if self.ids is None else "ids"
        return f"Positions({what}, start={self.start}, length={self.length})"

    @property
    def is_range(self) -> bool:
        return self.ids is None

    def tensor(self, device=None) -> torch.Tensor:
        """(length,) long tensor of the position ids."""
        if self.ids is None:
            return torch.arange(self.start, self.start + self.length, device=device)
        return self.ids[self.start : self.start + self.length].to(device)

    def key(self) -> tuple:
        """Names these positions in a memo: (start, length) for a range; for explicit ids the tensor's
        identity too, valid only while the tensor lives (one forward pass: see PositionMethod.per_pass)."""
        if self.ids is None:
            return ("range", self.start, self.length)
        return ("ids", id(self.ids), self.start, self.length)

    def slice(self, offset: int, length: int) -> Positions:
        """The positions of items offset .. offset+length-1 (a query chunk, the first keys)."""
        return Positions(self.start + offset, length, self.ids)

    def end(self) -> int:
        """1 + the largest position (what a table of positions must hold); 0 when empty."""
        if self.ids is None:
            return self.start + self.length
        return int(self.tensor().max()) + 1 if self.length else 0


def random_positions(length: int, max_position: int, generator: torch.Generator) -> torch.Tensor:
    """(length,) sorted, distinct position ids drawn uniformly from [0, max_position): Ruoss et al.
    2023, "Randomized Positional Encodings Boost Length Generalization of Transformers", Sec. 3 (their
    models/positional_encodings.py, noisy_fixed_positional_encodings: a choice without replacement
    from arange(noise_max_length), then sorted)."""
    if length > max_position:
        raise LengthError(f"randomized positions draw from [0, {max_position}): {length} tokens do not fit; "
                          f"train with a larger --random-positions")
    return torch.randperm(max_position, generator=generator)[:length].sort().values


# randomized positions draw from a stream of their own (seed + this), so turning them on leaves a
# sampler's batches exactly as they were
POSITION_SEED_OFFSET = 1_000_003


class PositionDraw:
    """A seeded source of randomized positions, one sorted subset of [0, max_position) per call (per
    forward pass, shared by the batch, as the reference draws once per apply). Its state is part of
    the training sampler's, so a resumed run draws what the original would have."""

    option = "--random-positions"  # the training option that asks for this draw (its errors name it)

    def __init__(self, max_position: int, seed: int) -> None:
        if max_position < 1:
            raise PosbenchError(f"{self.option} must be positive, got {max_position}")
        self.max_position = max_position
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, length: int) -> torch.Tensor:
        """(length,) long ids, on the CPU."""
        return random_positions(length, self.max_position, self.generator)

    def state_dict(self) -> dict:
        return {"generator": self.generator.get_state(), "max_position": self.max_position}

    def load_state_dict(self, state: dict) -> None:
        self.generator.set_state(state["generator"])


def pose_positions(length: int, max_position: int, generator: torch.Generator) -> torch.Tensor:
    """(length,) position ids of PoSE, positional skip-wise training (Zhu et al. 2024, "PoSE: Efficient
    Context Window Extension of LLMs via Positional Skip-wise Training", Sec. 3.2; dwzhu-pku/PoSE
    src/train_pose.py, train_preprocess_function_pose): the window in two chunks, the first at
    0 .. r1-1 with r1 uniform in 1 .. (length+1)//2, the second shifted by a skip uniform in
    0 .. max_position - length, so the ids reach up to max_position - 1 while each chunk stays
    contiguous (the reference's first chunk starts at 0: "more uniform coverage of large distances")."""
    if length > max_position:
        raise LengthError(f"PoSE spreads {length} tokens over [0, {max_position}): they do not fit; "
                          f"train with a larger --pose")
    first = int(torch.randint(1, (length + 1) // 2 + 1, (1,), generator=generator))
    skip = int(torch.randint(0, max_position - length + 1, (1,), generator=generator))
    ids = torch.arange(length)
    ids[first:] += skip
    return ids


class PoseDraw(PositionDraw):
    """PoSE's position ids (pose_positions), one draw per forward pass, resumable like PositionDraw."""

    option = "--pose"

    def __call__(self, length: int) -> torch.Tensor:
        return pose_positions(length, self.max_position, self.generator)


def training_draw(random_positions: int | None, pose: int | None, seed: int) -> PositionDraw | None:
    """The position ids a training sampler draws (TrainConfig.random_positions or .pose, at most one),
    from a stream of its own (seed + POSITION_SEED_OFFSET: the batches stay as they were), or None."""
    if random_positions is not None:
        return PositionDraw(random_positions, seed + POSITION_SEED_OFFSET)
    return None if pose is None else PoseDraw(pose, seed + POSITION_SEED_OFFSET)
