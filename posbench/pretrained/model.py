"""A Hugging Face causal LM behind the interface scoring and the heads probe use (what a GPT offers
them): model(idx) -> logits, `config` (n_layer, n_head, vocab_size, train_len, pos), `pos.describe`
(the per-head ALiBi slopes where the model has them) and watch_attention (the model's own attention
weights, eager attention, handed to a probe layer by layer)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..errors import LengthError, PosbenchError

# where an architecture keeps the context it was trained at (the first attribute its config has);
# BLOOM's config keeps none: its models were trained at 2,048 tokens (BigScience, Le Scao et al. 2022)
CONTEXT_FIELDS = ("n_positions", "max_position_embeddings", "max_seq_len", "seq_length")
TRAINED_CONTEXT = {"bloom": 2048}
# architectures whose positions are a learned table of that many rows: longer inputs cannot be encoded
LEARNED_TABLES = {"gpt2", "gpt_neo", "opt", "gpt_bigcode", "biogpt"}


def trained_context(config) -> int:
    for field in CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    if config.model_type in TRAINED_CONTEXT:
        return TRAINED_CONTEXT[config.model_type]
    raise PosbenchError(f"cannot tell the context a '{config.model_type}' model was trained at from its config")


def alibi_slopes(hf_model) -> list[float] | None:
    """The per-head ALiBi slopes, read from the model's own code (transformers `modeling_bloom.py`,
    build_alibi_tensor: slope * (key index) for a mask of ones, so key 1 gives the slope), or None."""
    build = getattr(getattr(hf_model, "transformer", None), "build_alibi_tensor", None)
    if hf_model.config.model_type != "bloom" or build is None:
        return None
    alibi = build(torch.ones(1, 2, dtype=torch.long), hf_model.config.num_attention_heads, torch.float32)
    return alibi[:, 0, 1].tolist()  # (heads,)


@dataclass(frozen=True)
class PretrainedShape:
    n_layer: int
    n_head: int
    vocab_size: int
    train_len: int  # the context the model was trained at
    pos: str  # what tables show: hf:NAME
    learned_table: bool  # positions past train_len cannot be encoded


class PretrainedPositions:
    """What a probe may read of the model's positions (PositionMethod.describe's layout)."""

    def __init__(self, slopes: list[float] | None) -> None:
        self.slopes = slopes

    def describe(self, length: int) -> dict:
        if self.slopes is None:
            return {}
        return {"slope": self.slopes, "column": "slope", "head_labels": [f"{m:.4g}" for m in self.slopes]}


class PretrainedModel(nn.Module):
    def __init__(self, hf_model, name: str) -> None:
        super().__init__()
        self.hf = hf_model.eval()
        c = hf_model.config
        self.config = PretrainedShape(c.num_hidden_layers, c.num_attention_heads, c.vocab_size, trained_context(c),
                                      f"hf:{name}", c.model_type in LEARNED_TABLES)
        self.pos = PretrainedPositions(alibi_slopes(hf_model))
        self.visit: Callable[[int, int, torch.Tensor], None] | None = None
        self.layers: Sequence[int] = ()

    def forward(self, idx: torch.Tensor, positions: torch.Tensor | None = None) -> torch.Tensor:
        """(B, T) ids -> (B, T, V) logits at positions 0..T-1. A length the model cannot encode (past a
        learned table) or cannot fit in memory raises LengthError: that length's "n/a"."""
        T = idx.size(1)
        if positions is not None:
            raise PosbenchError("explicit position ids are for posbench's own runs, not pretrained models")
        if self.config.learned_table and T > self.config.train_len:
            raise LengthError(f"{self.config.pos} has a learned table of {self.config.train_len} positions")
        try:
            out = self.hf(input_ids=idx, use_cache=False, output_attentions=self.visit is not None)
        except torch.OutOfMemoryError:
            raise LengthError(f"out of memory at {T} tokens") from None
        if self.visit is not None:
            for layer in self.layers:
                self.visit(layer, 0, out.attentions[layer].float())  # (B, H, T, T)
        return out.logits

    @contextlib.contextmanager
    def watch_attention(self, visit: Callable[[int, int, torch.Tensor], None], layers: Sequence[int] | None = None):
        """While open, every forward hands each probed layer's attention weights (the model's own,
        computed eagerly) to visit(layer, 0, p), p: (B, H, T, T)."""
        self.visit, self.layers = visit, list(range(self.config.n_layer)) if layers is None else list(layers)
        try:
            yield self
        finally:
            self.visit, self.layers = None, ()
