"""Does a model use the context it sees? The loss of the same target tokens given C tokens of
context, for every context length C >= L (the diagnostic the ALiBi paper's Appendix B asks for: a
perplexity that stays flat past L may come from fewer early tokens, not from longer context used).

K blocks of the longest context's predictions are placed as the length sweep places them
(scoring.block_starts: one at a random place in each K-th of the split); the targets are each
block's last `tail` predictions (L / 4 of them), and context C reads the window of C tokens that ends
there, so every C scores exactly the same targets, each with between C - tail + 1 and C tokens
before it. Blocks are the units of the intervals and of the pairing across C (stats.py), as for
the sweep; more blocks than the sweep's fit, since each adds only `tail` targets.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from rich.progress import Progress

from ..errors import LengthError
from ..model.gpt import GPT
from .scoring import BATCH_TOKENS, LengthResult, block_starts, position_draw, score_spans
from .stats import Windows, bytes_before

MODE = "context"  # results' mode for these rows
TAIL_FRACTION = 4  # targets per block: the last L / 4 predictions


def target_spans(starts: np.ndarray, longest: int, context: int, tail: int) -> list[tuple[int, int, int]]:
    """(start, end, first scored) per block: the `context` tokens before each block's end, scoring its
    last `tail` predictions (the same ones for every context)."""
    return [(b + longest - context, b + longest, b + longest - tail) for b in starts.tolist()]


@torch.inference_mode()
def context_use(model: GPT, tokens: np.ndarray, token_bytes: np.ndarray, contexts: Sequence[int], train_len: int,
                max_tokens: int, progress: Progress | None = None, label: str = "context",
                random_positions: int | None = None) -> list[LengthResult]:
    """One LengthResult (mode "context") per context length, each scoring the same targets: the last
    max(1, L / 4) predictions of as many blocks as `max_tokens` targets need and the split holds."""
    contexts = sorted(set(contexts))
    longest, tail = contexts[-1], max(1, min(contexts[0], train_len // TAIL_FRACTION))
    wanted = max(1, max_tokens // tail)
    starts = block_starts(len(tokens) - 1, longest, wanted * longest)
    cum_bytes = bytes_before(tokens, token_bytes)
    task = None if progress is None else progress.add_task(f"context use {label}",
                                                           total=len(starts) * sum(contexts))
    was_training = model.training
    model.eval()
    results = []
    try:
        for c in contexts:
            spans = target_spans(starts, longest, c, tail)
            try:
                sums, _ = score_spans(model, tokens, spans, c, BATCH_TOKENS, False,
                                      lambda n: progress and progress.advance(task, n), position_draw(random_positions))
            except LengthError as e:  # e.g. `learned` past its table: that context's n/a
                results.append(LengthResult(c, MODE, len(starts) * tail, error=str(e)))
                continue
            first, end = starts + longest - tail, starts + longest
            w = Windows(c, first, sums, end - first, cum_bytes[end] - cum_bytes[first], np.arange(len(starts)))
            results.append(LengthResult(c, MODE, len(starts) * tail, w.mean_loss, w.bpb, windows=w))
    finally:
        model.train(was_training)
    return results
