"""Perplexity of a model on a token array."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from .model import GPT


@torch.no_grad()
def window_loss(model: GPT, tokens: np.ndarray, length: int, max_tokens: int, batch_size: int = 8) -> float:
    """Mean next-token loss (nats) over non-overlapping windows of `length` from the start of
    `tokens`, at most `max_tokens` predictions. Deterministic: no sampling, no RNG."""
    n_windows = max(1, min((len(tokens) - 1) // length, max_tokens // length))
    device = next(model.parameters()).device
    total, count = 0.0, 0
    for first in range(0, n_windows, batch_size):
        starts = np.arange(first, min(first + batch_size, n_windows)) * length
        windows = torch.from_numpy(np.asarray(tokens[starts[:, None] + np.arange(length + 1)], dtype=np.int64))
        windows = windows.to(device)
        logits = model(windows[:, :-1])
        total += F.cross_entropy(logits.flatten(0, 1).float(), windows[:, 1:].flatten(), reduction="sum").item()
        count += windows[:, 1:].numel()
    return total / count


def perplexity(loss: float) -> float:
    return math.exp(min(loss, 700.0))


def bits_per_byte(loss: float, bytes_per_token: float) -> float:
    """nats per token -> bits per UTF-8 byte."""
    return loss / math.log(2) / bytes_per_token
