"""Scoring a model on a token array: the quick `window_loss` used while training, and the length
sweep behind `posbench eval-extrapolate` (train short, test long; Press et al. 2022).

The sweep scores the same predictions at every length, so numbers across lengths compare: K blocks
of the longest length's predictions, one in each K-th of the whole held-out split (a stratified sample:
text changes along a corpus, and its first N tokens are one topic's), each block cut into windows of
the evaluation length, either side by side (`nonoverlapping`) or sliding (`sliding`). The blocks are
what intervals resample (stats.py); both modes score the same blocks.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from rich.progress import Progress

from ..errors import LengthError, PosbenchError
from ..model.attention import prefill_rows
from ..model.gpt import GPT, KVCache
from ..positions import PositionDraw
from .stats import Windows, bytes_before

MODES = ("nonoverlapping", "sliding")
MAX_TOKENS = 32768  # predictions scored at every length, by default
BATCH_TOKENS = 16384  # input tokens per forward pass: short windows are batched, long ones go alone
HEAD_CHUNK = 2048  # positions per cross-entropy slice, so no (T, vocab) log-softmax copy of the logits
# A run trained with randomized positions is scored at random positions too, as the reference evaluates
# (Ruoss et al. 2023, experiments/range_evaluation.py: every batch applied with a fresh rng key, which
# the noisy encodings draw from). A fixed seed per scoring call keeps scores reproducible and leaves
# the training's random streams alone.
EVAL_POSITION_SEED = 1
PLACEMENT_SEED = 0  # where the scored blocks sit inside their strata (block_starts)


def position_draw(random_positions: int | None) -> PositionDraw | None:
    """A fresh, fixed-seed draw of positions from [0, random_positions), or None (positions 0..n-1)."""
    return None if random_positions is None else PositionDraw(random_positions, EVAL_POSITION_SEED)


def forward(model: GPT, x: torch.Tensor, draw: PositionDraw | None) -> torch.Tensor:
    """(B, T) ids -> (B, T, V) logits, at positions 0..T-1 or, with `draw`, at its next sorted draw.
    A long window whose bias is costly per (query, key) goes through the KV cache in query chunks
    (attention.prefill_rows), on the CPU: the same logits, each chunk's bias built once for all layers."""
    T = x.size(1)
    positions = None if draw is None else draw(T).to(x.device)
    # on CUDA, and for a stand-in model (tests), one plain call
    rows = T if x.is_cuda or not isinstance(model, GPT) else prefill_rows(model.pos, x.size(0), model.config.n_head, T)
    if rows == T:
        return model(x) if positions is None else model(x, positions=positions)
    cache = KVCache(model.config.n_layer)
    return torch.cat([model(x[:, s : s + rows], start=s, cache=cache,
                            positions=None if positions is None else positions[s : s + rows])
                      for s in range(0, T, rows)], dim=1)  # (B, T, V)


@torch.no_grad()
def window_loss(model: GPT, tokens: np.ndarray, length: int, max_tokens: int, batch_size: int = 8,
                random_positions: int | None = None) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of `length` from the start of
    `tokens`, at most `max_tokens` predictions. Deterministic: no sampling, and randomized positions
    (random_positions = M) come from a generator of a fixed seed."""
    draw = position_draw(random_positions)
    n_windows = max(1, min((len(tokens) - 1) // length, max_tokens // length))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for first in range(0, n_windows, batch_size):
        starts = np.arange(first, min(first + batch_size, n_windows)) * length
        windows = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(length + 1)], dtype=np.int64))
        windows = windows.to(device)
        logits = forward(model, windows[:, :-1], draw)
        total += F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction="sum").item()
        count += windows[:, 1:].numel()
    return total / count


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """nats per token -> bits per UTF-8 byte."""
    return loss / math.log(2) / bytes_per_token


# ----------------------------------------------------------------------------- the length sweep


@dataclass
class LengthResult:
    length: int
    mode: str
    tokens: int  # predictions scored
    loss: float | None = None  # mean nats per token; None when the model cannot run this length
    bpb: float | None = None
    error: str | None = None  # why there is no loss (e.g. `learned` past its table)
    position_losses: np.ndarray | None = field(default=None, repr=False)  # (length,) mean loss per window offset
    # per window: summed loss and scored tokens (sliding: only its new ones), what intervals resample
    windows: Windows | None = field(default=None, repr=False)

    @property
    def ppl(self) -> float | None:
        return None if self.loss is None else perplexity(self.loss)


def parse_lengths(text: str) -> list[int]:
    """'128,256,512' -> [128, 256, 512]; a clear error for anything that is not a positive integer."""
    try:
        lengths = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise PosbenchError(f"--lengths must be comma-separated integers, got '{text}'") from None
    return check_lengths(lengths)


def check_lengths(lengths: Sequence[int]) -> list[int]:
    if not lengths:
        raise PosbenchError("--lengths is empty")
    if bad := [n for n in lengths if n <= 0]:
        raise PosbenchError(f"--lengths must be positive, got {bad[0]}")
    return sorted(set(lengths))


def default_lengths(train_len: int, max_len: int) -> list[int]:
    """The training length times 1, 2, 4, ... up to max_len, plus max_len itself."""
    if max_len <= 0:
        raise PosbenchError(f"--max-len must be positive, got {max_len}")
    lengths, n = [], train_len
    while n <= max_len:
        lengths.append(n)
        n *= 2
    return check_lengths([*lengths, max_len])


def block_starts(available: int, longest: int, max_tokens: int, seed: int = PLACEMENT_SEED) -> np.ndarray:
    """Where each scored block of `longest` predictions starts: as many blocks K as max_tokens allows
    and the split holds side by side (at least one), one in each K-th of the split at a random place
    inside it (a stratified sample, drawn from a fixed seed: the same places for every run, method and
    length). Random places, not a fixed grid, so the interval's coverage holds over the draw whatever
    the text's long-range structure (docs/statistics.md). Prediction p has input tokens[p] and target
    tokens[p + 1]; `available` = len(tokens) - 1."""
    if max_tokens <= 0:
        raise PosbenchError(f"--max-tokens must be positive, got {max_tokens}")
    if available < longest:
        raise PosbenchError(f"the evaluation text has {available + 1} tokens, too few for a window of {longest} "
                            f"(needs {longest + 1}); lower --max-len or use a larger split")
    k = max(1, min(available, max_tokens) // longest)
    edges = (np.arange(k + 1) * available) // k  # stratum i: predictions edges[i] .. edges[i + 1] - 1
    room = edges[1:] - edges[:-1] - longest + 1  # places a block can start inside its stratum (>= 1)
    return edges[:-1] + (np.random.default_rng(seed).random(k) * room).astype(np.int64)


def windows(n: int, length: int, mode: str, stride: int | None = None) -> list[tuple[int, int, int]]:
    """(start, end, first scored) input spans that score predictions 0..n-1 exactly once.

    nonoverlapping: windows side by side, every prediction scored (the last window may be shorter).
    sliding: full windows whose ends advance by `stride`; each scores only what the previous one
    did not, its last `stride` predictions, which so get at least length - stride of context."""
    if mode == "nonoverlapping":
        return [(s, min(s + length, n), s) for s in range(0, n, length)]
    if mode != "sliding":
        raise PosbenchError(f"--mode must be nonoverlapping, sliding or both, got '{mode}'")
    stride = min(stride or max(1, length // 2), length)  # a longer stride would skip predictions
    spans, end = [], 0
    while end < n:
        new_end = min(n, end + stride if end else length)
        spans.append((max(0, new_end - length), new_end, end))
        end = new_end
    return spans


def block_windows(starts: np.ndarray, block: int, length: int, mode: str,
                  stride: int | None = None) -> tuple[list[tuple[int, int, int]], np.ndarray]:
    """The windows of every block (block-relative `windows`, shifted to each block's start) and the
    block index of each: every block is scored as a text of its own, so lengths and modes pair."""
    inside = windows(block, length, mode, stride)
    spans = [(b + s, b + e, b + f) for b in starts.tolist() for s, e, f in inside]
    return spans, np.repeat(np.arange(len(starts)), len(inside))


def token_losses(model: GPT, x: torch.Tensor, y: torch.Tensor, first: int = 0,
                 draw: PositionDraw | None = None) -> torch.Tensor:
    """(B, T) inputs and targets -> (B, T - first) next-token losses (nats) at positions first..

    Cross-entropy runs over slices of positions: log-softmax over the vocabulary would otherwise
    hold a second (B, T, vocab) float tensor next to the logits, the largest one at long lengths."""
    logits = forward(model, x, draw)  # (B, T, V)
    out = [F.cross_entropy(logits[:, s : s + HEAD_CHUNK].flatten(0, 1).float(), y[:, s : s + HEAD_CHUNK].flatten(),
                           reduction="none").view(x.size(0), -1)
           for s in range(first, x.size(1), HEAD_CHUNK)]
    return torch.cat(out, dim=1)


def score_spans(model: GPT, tokens: np.ndarray, spans: list[tuple[int, int, int]], length: int, batch_tokens: int,
           track: bool, advance, draw: PositionDraw | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Summed loss of the scored predictions of each of `spans`; with track, also the mean loss at
    each offset of the full-length windows (all their positions, scored or not)."""
    device = next(model.parameters()).device
    sums = np.zeros(len(spans))
    by_pos, full = torch.zeros(length, dtype=torch.float64), 0
    def width(i: int) -> int:
        return spans[i][1] - spans[i][0]

    # by width, so every block's short last window (a length that does not divide the block) batches together
    for size, group in itertools.groupby(sorted(range(len(spans)), key=width), key=width):
        group = list(group)
        batch = max(1, batch_tokens // size)
        for i in range(0, len(group), batch):
            rows = group[i : i + batch]
            chunk = [spans[r] for r in rows]
            starts = np.array([s for s, _, _ in chunk])
            ids = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(size + 1)], dtype=np.int64))
            ids = ids.to(device)  # (B, size + 1)
            skip = torch.tensor([f - s for s, _, f in chunk])[:, None]  # (B, 1) already scored by an earlier window
            lo = 0 if track else int(skip.min())
            losses = token_losses(model, ids[:, :-1], ids[:, 1:], lo, draw).double().cpu()  # (B, size - lo)
            sums[rows] = losses.masked_fill(torch.arange(lo, size)[None] < skip, 0.0).sum(1).numpy()
            if track and size == length:
                by_pos += losses.sum(0)
                full += len(chunk)
            advance(len(chunk) * size)
    return sums, (by_pos / full).numpy() if track and full else None


@torch.inference_mode()
def evaluate_lengths(
    model: GPT,
    tokens: np.ndarray,
    token_bytes: np.ndarray,
    lengths: Sequence[int],
    mode: str = "nonoverlapping",
    stride: int | None = None,
    max_tokens: int = MAX_TOKENS,
    batch_tokens: int = BATCH_TOKENS,
    progress: Progress | None = None,
    label: str = "eval",
    random_positions: int | None = None,
) -> list[LengthResult]:
    """Loss, perplexity and bits per byte of `model` at each length, on the same predictions.

    mode: nonoverlapping, sliding or both (nonoverlapping results first). stride: sliding step,
    default half the window. token_bytes: UTF-8 bytes of each token id (Tokenizer.token_bytes).
    Results of the first mode carry position_losses, the loss at each offset of the window.
    random_positions (a run's TrainConfig.random_positions, M): score at sorted random positions from
    [0, M), a fresh fixed-seed draw per (mode, length); a length above M is that length's error."""
    lengths = check_lengths(lengths)
    modes = MODES if mode == "both" else (mode,)
    if stride is not None and stride <= 0:
        raise PosbenchError(f"--stride must be positive, got {stride}")
    starts = block_starts(len(tokens) - 1, lengths[-1], max_tokens)
    n = len(starts) * lengths[-1]  # predictions scored at every length
    cum_bytes = bytes_before(tokens, token_bytes)
    plans = [(m, L, *block_windows(starts, lengths[-1], L, m, stride)) for m in modes for L in lengths]
    task = None
    if progress is not None:
        task = progress.add_task(label, total=sum(e - s for _, _, spans, _ in plans for s, e, _ in spans))

    def advance(count: int) -> None:
        if progress is not None:
            progress.advance(task, count)

    was_training = model.training
    model.eval()
    results = []
    try:
        for m, L, spans, block in plans:
            if progress is not None:
                progress.update(task, description=f"eval {label} {m} {L}")
            try:
                sums, by_pos = score_spans(model, tokens, spans, L, batch_tokens, m == modes[0], advance,
                                      position_draw(random_positions))
            except LengthError as e:
                results.append(LengthResult(L, m, n, error=str(e)))
                advance(sum(e - s for s, e, _ in spans))
                continue
            first, end = np.array([f for _, _, f in spans]), np.array([e for _, e, _ in spans])
            w = Windows(L, first, sums, end - first, cum_bytes[end] - cum_bytes[first], block)
            results.append(LengthResult(L, m, n, w.mean_loss, w.bpb, position_losses=by_pos, windows=w))
    finally:
        model.train(was_training)
    return results


def position_loss(losses: np.ndarray, train_len: int) -> list[dict]:
    """Mean loss over window positions [0, L), [L, 2L), [2L, 4L), ... (L = train_len), the last
    bucket cut at the window's end: where inside a long window a method breaks."""
    buckets, start, end = [], 0, train_len
    while start < len(losses):
        end = min(end, len(losses))
        buckets.append({"start": start, "end": end, "loss": float(np.mean(losses[start:end]))})
        start, end = end, 2 * end
    return buckets
