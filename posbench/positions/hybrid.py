"""Per-layer hybrids: RoPE with a local mask in most layers, NoPE with full attention in every
`nope_every`-th (RNoPE-SWA: Yang et al. 2025, "Rope to Nope and Back Again", and Cohere Command A:
three sliding-window RoPE layers, then one global NoPE layer; Llama 4's iRoPE: HF transformers
`Llama4TextConfig.no_rope_layers`, NoPE where (layer + 1) % 4 == 0, chunked attention in the RoPE
layers). The local span is ModelConfig.window (None: half the training length, Command A's 4,096 of
8,192). A model shallower than `nope_every` gets its last layer as the NoPE one, so every hybrid has
a global layer (the references' rule would give it none)."""

from __future__ import annotations

from .base import PositionMethod
from .local import LocalMask
from .none import NoPosition
from .rotary import RotaryPosition


def nope_layers(n_layer: int, every: int) -> frozenset[int]:
    """Layers i with (i + 1) % every == 0 (Llama 4's rule), or the last layer when there are none."""
    layers = frozenset(i for i in range(n_layer) if (i + 1) % every == 0)
    return layers or frozenset({n_layer - 1})


def local_span(config) -> int:
    """The window or chunk size: ModelConfig.window, else half the training length (at least 1)."""
    return config.window if config.window is not None else max(1, config.train_len // 2)


class HybridPosition(PositionMethod):
    """A RoPE part with a `local_kind` mask and a NoPE part; for_layer picks one per layer."""

    name = "hybrid"
    local_kind = "window"
    rope_scalable = True  # the RoPE layers' frequencies (rope_scaling.py)
    settings = ("window", "nope_every")

    def __init__(self, config) -> None:
        super().__init__(config)
        self.rope = RotaryPosition(config)
        self.rope.local = LocalMask(self.local_kind, local_span(config))
        self.nope = NoPosition(config)
        self.nope_at = nope_layers(config.n_layer, config.nope_every)

    def for_layer(self, layer: int) -> PositionMethod:
        return self.nope if layer in self.nope_at else self.rope

    def describe(self, length: int) -> dict:
        return {"nope_layers": sorted(self.nope_at), self.local_kind: self.rope.local.size}


class RnopeSwaPosition(HybridPosition):
    name = "rnope-swa"
    local_kind = "window"


class IropePosition(HybridPosition):
    name = "irope"
    local_kind = "chunk"
