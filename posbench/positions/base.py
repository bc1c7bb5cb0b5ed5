"""The position interface: hooks that default to doing nothing, and `after_step` for the training loop.

A method overrides only the hooks it needs; `Attention` calls all of them and never names a method:
embed (absolute methods), rotate (rotary and kin), score_bias / distance_bias (a bias of positions),
log_decay (a bias from the layer's input: data-dependent decay), content_bias (a bias from q and k:
CoPE), attention_weights (a normaliser in place of the softmax: stick-breaking), `local` (a
sliding-window or chunk mask), and for_layer (a method whose layers differ: hybrids, per-layer
parameters).
Every hook reads absolute position ids (ids.Positions): usually a range start..start+T-1 (start is 0
in training, the cache length when decoding, a chunk offset in chunked evaluation), or explicit ids
(randomized positions). Causality is by order in the sequence, never by position id: attention
masks a key that comes after the query, whatever ids the two carry.
"""

from __future__ import annotations

import contextlib
import itertools

import torch
from torch import nn

from .ids import Positions
from .local import LocalMask

EMBED_INIT_STD = 0.02  # GPT-2's init of token (and learned position) embeddings
CACHE_NUMEL = 1 << 24  # elements memoised per method at most (64 MB of float32)


class PositionMethod(nn.Module):
    name: str = "base"
    max_positions: int | None = None  # positions the method can encode at all (None: any number)
    # True for methods whose rotary frequencies RoPE scaling (rope_scaling.py) can rescale at evaluation
    rope_scalable: bool = False
    # the ModelConfig fields this method reads (beyond the shape): compare's labels show those not
    # at their default, and a config.json written before they existed gets their legacy values
    settings: tuple[str, ...] = ()
    # whether the method's reference implementation puts a LayerNorm right after the embedding:
    # the default of ModelConfig.embed_norm (--embed-norm / --no-embed-norm override it)
    reference_embed_norm: bool = False
    # False for a method that gives a layer no position information at all (NoPE): what a temperature
    # meant for NoPE layers (Llama 4's) reads
    encodes_positions: bool = True
    # a sliding-window or chunk mask on top of the causal one (local.py), or None: every past key
    local: LocalMask | None = None

    def __init__(self, config) -> None:  # config: posbench.runs.config.ModelConfig
        super().__init__()
        self.n_head = config.n_head
        self.head_dim = config.d_model // config.n_head
        self._static: dict[tuple, torch.Tensor] = {}
        self._pass: dict[tuple, torch.Tensor] | None = None  # see one_pass

    def embed(self, x: torch.Tensor, positions: Positions) -> torch.Tensor:
        """(B, T, D) token embeddings at `positions` (T of them) -> (B, T, D): absolute methods add here."""
        return x

    def rotate(self, q: torch.Tensor, k: torch.Tensor, positions: Positions) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, H, T, hd) queries and keys of the same T tokens at `positions` -> transformed (rotary and kin)."""
        return q, k

    def score_bias(self, q_pos: Positions, k_pos: Positions) -> torch.Tensor | None:
        """(H, Tq, Tk) added to the scores of queries at q_pos over keys at k_pos before softmax, or None.
        A new tensor each call (never a memoised one): attention writes -inf into it on future keys.
        A method with a distance_bias gets it from there; others with a bias override this."""
        if not self.shift_invariant:
            return None
        if q_pos.is_range and k_pos.is_range:
            # the bias once per distance, laid along the diagonals (its gradient: their sums), not
            # once per (query, key)
            return along_diagonals(self.bias_by_distance(q_pos, k_pos), len(q_pos), len(k_pos))
        device = self.device  # explicit ids: the distance of every (query, key), built once per pass

        def build():
            return position_distance(q_pos, k_pos, device)  # (q, k)

        return self.distance_bias(self.cached(("distance", device), build, q_pos, k_pos))  # (H, q, k)

    def distance_bias(self, distance: torch.Tensor) -> torch.Tensor:
        """(H, *distance.shape) bias of keys `distance` = i - j behind their query (long tensor, any
        shape; negative entries are future keys, masked afterwards, so any finite value does). A
        method whose bias depends on i - j alone overrides this instead of score_bias: long windows
        then take one (H, Tq + Tk - 1) vector of it instead of (H, Tq, Tk) (attention.py)."""
        raise NotImplementedError

    def bias_by_distance(self, q_pos: Positions, k_pos: Positions) -> torch.Tensor:
        """(H, Tq + Tk - 1) distance_bias at every distance i - j between queries at q_pos and keys at
        k_pos (both ranges: i - j steps by one), smallest first (query 0, last key)."""
        first = q_pos.start - k_pos.end() + 1
        return self.distance_bias(torch.arange(first, first + len(q_pos) + len(k_pos) - 1, device=self.device))

    def log_decay(self, x: torch.Tensor) -> torch.Tensor | None:
        """(B, T, D) the layer's input -> (B, H, T) log of a per-token decay in (0, 1], or None: the
        score of key j for query i then gains sum_{l=j+1..i} log_decay_l (data-dependent decay, FoX).
        Attention adds it as a per-key term (decay.py); the KV cache carries its running sum."""
        return None

    def content_bias(self, q: torch.Tensor, k: torch.Tensor, scores: torch.Tensor, allowed: torch.Tensor
                     ) -> torch.Tensor | None:
        """A bias computed from q and k (CoPE's gated positions), or None. q (B, H, Tq, hd), k (B, H, Tk,
        hd), the queries the last Tq of the keys; scores: q.k / sqrt(hd) (B, H, Tq, Tk), computed once
        for the method to reuse; allowed: (1 or H, Tq, Tk) bool, the keys each query may see (causal,
        local) -> (B, H, Tq, Tk) added to the scores. Attention then computes its weights explicitly,
        one query chunk at a time (a row depends on its query and its keys only)."""
        return None

    def attention_weights(self, logits: torch.Tensor, allowed: torch.Tensor) -> torch.Tensor:
        """(B, H, Tq, Tk) logits (every bias added, -inf on keys not `allowed`; the queries the last Tq
        of the keys) -> the weights that mix the values: the softmax, unless a method normalises
        otherwise (stick-breaking). Probes read these weights."""
        return torch.softmax(logits, dim=-1)

    @property
    def content_dependent(self) -> bool:
        """True when the method has a content bias or its own normaliser: attention then takes its
        explicit path (no fused kernel computes either)."""
        cls = type(self)
        return (cls.content_bias is not PositionMethod.content_bias
                or cls.attention_weights is not PositionMethod.attention_weights)

    def for_layer(self, layer: int) -> PositionMethod:
        """The method layer `layer` uses: itself, or one of its parts (a hybrid's RoPE or NoPE
        layer, a method with parameters per layer). The model's embed hook is the top method's."""
        return self

    def describe(self, length: int) -> dict:
        """JSON-able parameters that shape attention, for probes and reports; {} when there are none.
        A method with parameters also gives "column" (a table title) and "head_labels" (one short label
        per head); a per-head ALiBi-like slope goes under "slope". `length`: the window reported on."""
        return {}

    def after_step(self, step: int, progress: float) -> None:
        """Called by the training loop right after each optimizer step: `step` steps done, `progress`
        the fraction of training done (a method whose reference code projects its parameters back
        into range in place does it here; one that changes during training, DroPE, too)."""

    @property
    def shift_invariant(self) -> bool:
        """True when the score bias depends on i - j alone (the method overrides distance_bias)."""
        return type(self).distance_bias is not PositionMethod.distance_bias

    @property
    def has_score_bias(self) -> bool:
        """True when the method has a score bias (attention then needs a float mask)."""
        return self.shift_invariant or type(self).score_bias is not PositionMethod.score_bias

    @property
    def device(self) -> torch.device:
        """Where the method's parameters and buffers live (the CPU for one with neither)."""
        tensor = next(itertools.chain(self.parameters(), self.buffers()), None)
        return torch.device("cpu") if tensor is None else tensor.device

    def extra_repr(self) -> str:
        return self.name

    def cached(self, key: tuple, build, *positions: Positions) -> torch.Tensor:
        """Memoise a tensor that depends only on shapes and `positions` (never on parameters): slopes x
        distances, bucket ids, sin/cos tables. Keyed by (start, length) of ranges; a tensor built from
        explicit ids (a fresh draw each training step) is built anew. Bounded, so chunked evaluation of
        long windows cannot pile up."""
        if torch.compiler.is_compiling():  # a compiled graph computes (and fuses) these itself
            return build()
        if not all(p.is_range for p in positions):
            return self.per_pass((*key, "static"), build, *positions)
        # inference-mode tensors cannot enter autograd later, so they are cached apart
        key = (*key, *(p.key() for p in positions), torch.is_inference_mode_enabled())
        return _memoise(self._static, key, build)

    @contextlib.contextmanager
    def one_pass(self):
        """Opened by GPT.forward around its layers: parameters cannot change inside one forward
        pass, so what `per_pass` memoises there (a learned bias too) is built once for all layers."""
        self._pass = {}
        try:
            yield
        finally:
            self._pass = None

    def per_pass(self, key: tuple, build, *positions: Positions) -> torch.Tensor:
        """`build()`, shared by every layer of the current forward pass (built anew outside one); the
        key includes each of `positions`' key (explicit ids by identity, alive for the whole pass)."""
        if self._pass is None or torch.compiler.is_compiling():
            return build()
        return _memoise(self._pass, (*key, *(p.key() for p in positions)), build)


def _memoise(store: dict[tuple, torch.Tensor], key: tuple, build) -> torch.Tensor:
    tensor = store.get(key)
    if tensor is None:
        tensor = build()
        # bounded in size too: the per-chunk biases of one long window would otherwise add up
        # to the full (H, T, T) bias, the quadratic memory that query chunking avoids
        held = sum(t.numel() for t in store.values())
        if len(store) >= 64 or held + tensor.numel() > CACHE_NUMEL:
            store.clear()
        store[key] = tensor
    return tensor


def relative_distance(q_len: int, k_len: int, start: int, device) -> torch.Tensor:
    """(q_len, k_len) long tensor of i - j over sequence indices, queries at start.., keys at 0..: how
    far key j lies behind query i (negative = future). The causal mask and probes use it."""
    i = torch.arange(start, start + q_len, device=device)[:, None]
    j = torch.arange(k_len, device=device)[None, :]
    return i - j


def along_diagonals(per_distance: torch.Tensor, q_len: int, k_len: int) -> torch.Tensor:
    """(H, q_len + k_len - 1) values by distance i - j, smallest first (query 0, key k_len - 1) ->
    the (H, q_len, k_len) matrix of query i, key j, a new contiguous tensor: entry i + (k_len - 1 - j)
    of the vector. Reversed, the vector's windows of k_len give the rows from the last query up."""
    rows_last_first = per_distance.flip(-1).unfold(-1, k_len, 1)  # (H, q, k) view: row s is query q-1-s
    return rows_last_first.flip(-2).contiguous()


def position_distance(q_pos: Positions, k_pos: Positions, device) -> torch.Tensor:
    """(Tq, Tk) long tensor of q_pos[i] - k_pos[j]: the distance a relative method encodes."""
    return q_pos.tensor(device)[:, None] - k_pos.tensor(device)[None, :]


def sinusoid_table(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """Vaswani et al. 2017, Sec. 3.5: PE(p, 2i) = sin(p / 10000^(2i/d)), PE(p, 2i+1) = cos(same).

    positions: (T,) -> (T, dim), computed for any position (no table cap)."""
    inv_freq = 10000.0 ** (-torch.arange(0, dim, 2, dtype=torch.float32, device=positions.device) / dim)
    angles = positions.float()[:, None] * inv_freq[None, :]  # (T, dim/2)
    table = torch.stack((angles.sin(), angles.cos()), dim=-1)  # (T, dim/2, 2): sin, cos interleaved
    return table.flatten(1)
