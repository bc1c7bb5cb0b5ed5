"""Local attention masks on top of the causal one: a sliding window (Mistral; the RoPE layers of
Cohere Command A and of RNoPE-SWA, Yang et al. 2025) or fixed chunks (Llama 4's chunked attention,
HF transformers `modeling_llama4.py`). Like causality, both go by order in the sequence (token
index), never by position id."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class LocalMask:
    """kind "window": query i sees keys i - size + 1 .. i; kind "chunk": the keys of its own chunk
    of `size` tokens up to itself, (i // size) * size .. i."""

    kind: str
    size: int

    def __post_init__(self) -> None:
        assert self.kind in ("window", "chunk") and self.size >= 1, self

    def first_key(self, i: torch.Tensor | int) -> torch.Tensor | int:
        """The earliest key query index i may see (elementwise for a tensor of indices)."""
        if self.kind == "window":
            return i - self.size + 1 if isinstance(i, torch.Tensor) else max(0, i - self.size + 1)
        return (i // self.size) * self.size

    def hidden(self, q_index: torch.Tensor, k_index: torch.Tensor) -> torch.Tensor:
        """(Tq, Tk) bool: True where key k_index[j] lies before query q_index[i]'s local span."""
        return k_index[None, :] < self.first_key(q_index)[:, None]

    def keys_seen(self, q_index: torch.Tensor) -> torch.Tensor:
        """(Tq,) how many keys each query at these indices sees (itself included)."""
        return q_index - self.first_key(q_index).clamp(min=0) + 1
