"""A pretrained causal LM in posbench's shapes, so the scoring and the heads probe that posbench's own
runs go through take it as they are.

What they read of a model, and what CausalLM gives:
- model(idx): (B, T) ids -> (B, T, V) logits (scoring.forward makes one plain call for a model that is
  not posbench's GPT). A window past a learned position table raises LengthError, one that does not
  fit in memory MemoryExceeded (a LengthError): the sweep records either as that length's n/a.
- model.watch_attention(visit, layers): inside it, every forward pass asks transformers for the
  attention weights (output_attentions; eager attention, see hub.load_model) and hands each watched
  layer's (B, H, T, T) probabilities (on the CPU) to visit(layer, 0, p), as GPT.watch_attention does.
- model.config.n_layer / n_head / vocab_size / train_len / pos, and model.pos.describe(length): the
  ALiBi slopes for a model that has them (architectures.alibi_slopes), as posbench's alibi gives them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import torch

from ..errors import LengthError, PosbenchError

Visit = Callable[[int, int, torch.Tensor], None]


class MemoryExceeded(LengthError):
    """A window that did not fit in the device's memory: its length reads "n/a (out of memory)"."""


@dataclass(frozen=True)
class Shape:
    """What scoring and the heads probe read of a model's config."""

    n_layer: int
    n_head: int
    vocab_size: int
    train_len: int  # the trained context (architectures.trained_context)
    pos: str  # "hf:<model_type>": what reports name the position scheme by


class Parameters:
    """What the model's positions say of themselves, as a posbench method's describe(length) does."""

    def __init__(self, slopes: list[float] | None) -> None:
        self.slopes = slopes

    def describe(self, length: int) -> dict:
        if self.slopes is None:
            return {}
        return {"slope": list(self.slopes), "column": "slope", "head_labels": [f"{m:.4g}" for m in self.slopes]}


def out_of_memory(e: BaseException) -> bool:
    """CUDA's OutOfMemoryError, or the CPU allocator's failure (a RuntimeError by its message)."""
    text = str(e)
    return isinstance(e, torch.cuda.OutOfMemoryError) or (
        isinstance(e, RuntimeError) and ("can't allocate memory" in text or "out of memory" in text.lower()))


class CausalLM(torch.nn.Module):
    """A transformers causal LM (AutoModelForCausalLM) with posbench's interface."""

    def __init__(self, model: torch.nn.Module, name: str, context: int, slopes: list[float] | None = None,
                 table: int | None = None) -> None:
        super().__init__()
        self.model = model
        self.name = name
        self.table = table  # positions of a learned absolute table; None: no limit
        c = model.config
        self.config = Shape(c.num_hidden_layers, c.num_attention_heads, model.get_input_embeddings().num_embeddings,
                            context, f"hf:{c.model_type}")
        self.pos = Parameters(slopes)
        self._visit: Visit | None = None
        self._layers: list[int] = []

    def check_length(self, length: int) -> None:
        if self.table is not None and length > self.table:
            raise LengthError(f"{self.name} has learned positions for {self.table:,} tokens; a window of "
                              f"{length:,} is past its table")

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) token ids -> (B, T, V) logits, at positions 0..T-1 (no cache)."""
        self.check_length(idx.size(1))
        idx = idx.to(self.model.device)  # the heads probe hands over CPU windows
        watching = self._visit is not None
        try:
            out = self.model(input_ids=idx, use_cache=False, output_attentions=watching)
        except RuntimeError as e:
            if not out_of_memory(e):
                raise
            if idx.is_cuda:
                torch.cuda.empty_cache()
            raise MemoryExceeded(f"out of memory ({idx.size(0)} window(s) of {idx.size(1):,} tokens on "
                                 f"{idx.device.type})") from None
        if watching:
            self._hand_over(out.attentions)
        return out.logits

    def _hand_over(self, attentions: Sequence[torch.Tensor] | None) -> None:
        if not attentions or len(attentions) != self.config.n_layer or any(a is None for a in attentions):
            raise PosbenchError(f"{self.name} returns no attention weights (its attention implementation "
                                "computes none); inspect-heads needs a model with eager attention")
        for layer in self._layers:
            self._visit(layer, 0, attentions[layer].float().cpu())  # where the probe's sums are

    @contextlib.contextmanager
    def watch_attention(self, visit: Visit, layers: Sequence[int] | None = None) -> Iterator[None]:
        """Inside the block, each forward pass hands the watched layers' (default all) attention
        probabilities to visit(layer, 0, p), p: (B, H, T, T)."""
        self._visit, self._layers = visit, list(range(self.config.n_layer)) if layers is None else list(layers)
        try:
            yield
        finally:
            self._visit, self._layers = None, []
