"""A pre-LayerNorm GPT decoder whose position information comes from one pluggable module.

Read top to bottom: causal_attention (the one attention kernel), Attention, MLP, Block, GPT (its
settings, ModelConfig, are in config.py). The position method is built once per model and handed to
every attention layer, which calls its three hooks without knowing which method it is. Position ids
(positions.Positions) say where each token sits; the order of the sequence alone says what is causal:
queries are the last Tq of the Tk keys, whatever their ids.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig
from .flex import flex_attention, flex_biased_attention
from .positions import METHODS, PositionMethod, Positions, relative_distance
from .positions.base import EMBED_INIT_STD

# Largest float mask (elements) one attention call may hold; longer inputs are cut into query
# chunks so memory grows linearly with length instead of quadratically.
MASK_BUDGET = 1 << 24
# Largest probability block (B, H, chunk, keys) the explicit path holds at once while a probe watches;
# probes make a few temporaries of the same size from it, so this bounds memory at a few times 16 MiB.
PROBE_BUDGET = 1 << 22

# A probe's callback: (layer, first query position of the chunk, p: (B, H, chunk, keys) probabilities)
Visit = Callable[[int, int, torch.Tensor], None]


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
    visit: Callable[[int, torch.Tensor], None] | None = None,
) -> torch.Tensor:
    """Causal SDPA for queries at q_pos over keys at k_pos, plus the method's score bias; the queries
    are the last Tq of the keys (query r sees keys 0 .. Tk-Tq+r). q: (B, H, Tq, hd), k/v: (B, H, Tk, hd)
    -> (B, H, Tq, hd).

    Plain causal self-attention without a bias takes SDPA's is_causal kernel. Otherwise the bias
    and the causal mask are folded into one float mask, built per query chunk so it never holds
    more than MASK_BUDGET elements. With `visit` (a probe), the softmax is written out instead and
    each chunk's probabilities go to visit(index of the chunk's first query among the keys, p)."""
    B, H, Tq, _ = q.shape
    Tk = k.size(2)
    offset = Tk - Tq  # index of the first query among the keys
    if visit is not None:
        return explicit_attention(q, k, v, pos, q_pos, k_pos, visit)
    if Tq == Tk and not pos.has_score_bias:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    chunk = min(Tq, max(1, MASK_BUDGET // (B * H * Tk)))
    flex = q.is_cuda and pos.has_score_bias and flex_attention is not None
    # With a bias of i - j alone and ids that step by one (a range), the mask of the chunk at query
    # offset s over keys 0..offset+s+c-1 is the last c rows and offset+s+c columns of the widest
    # chunk's mask over all Tk keys: build that one (queries = the last `chunk` keys), slice the rest.
    shared = None
    if (pos.shift_invariant and chunk < Tq and not flex and q_pos.is_range and k_pos.is_range
            and q_pos.start == k_pos.start + offset):
        shared = causal_mask(pos, k_pos.slice(Tk - chunk, chunk), k_pos, q.device, q.dtype)[None]  # (1, H, chunk, Tk)
    out = []
    for s in range(0, Tq, chunk):
        qc = q[:, :, s : s + chunk]  # (B, H, c, hd)
        c = qc.size(2)
        k_len = min(Tk, offset + s + c)  # later keys are all in the future of this chunk
        kc, vc = k[:, :, :k_len], v[:, :, :k_len]
        qc_pos, kc_pos = q_pos.slice(s, c), k_pos.slice(0, k_len)
        if flex:
            bias = pos.per_pass(("bias",), functools.partial(pos.score_bias, qc_pos, kc_pos), qc_pos, kc_pos)
            out.append(flex_biased_attention(qc, kc, vc, bias, offset + s))
            continue
        if shared is not None:
            mask = shared[:, :, chunk - c :, Tk - k_len :]  # (1, H, c, k)
        else:  # 4-D: with a 3-D mask, CPU SDPA falls back from its fused kernel to the slow math path
            mask = causal_mask(pos, qc_pos, kc_pos, q.device, q.dtype)[None]  # (1, H|1, c, k)
        out.append(F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask))
    return torch.cat(out, dim=2)


def explicit_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
    visit: Callable[[int, torch.Tensor], None],
) -> torch.Tensor:
    """causal_attention with scores, mask, softmax and p @ v written out, one query chunk at a time,
    so a probe sees the probabilities SDPA never materialises: visit(offset + s, p), p: (B, H, c, k)
    over the chunk's keys 0..k-1 (later keys are all in its future), offset + s the index of the
    chunk's first query among the keys. Same output as SDPA's path."""
    B, H, Tq, hd = q.shape
    Tk = k.size(2)
    offset = Tk - Tq
    chunk = max(1, PROBE_BUDGET // (B * H * Tk))
    out = []
    for s in range(0, Tq, chunk):
        qc = q[:, :, s : s + chunk]  # (B, H, c, hd)
        c = qc.size(2)
        k_len = min(Tk, offset + s + c)
        scores = qc @ k[:, :, :k_len].transpose(-2, -1) / math.sqrt(hd)  # (B, H, c, k)
        mask = causal_mask(pos, q_pos.slice(s, c), k_pos.slice(0, k_len), q.device, q.dtype)  # (H|1, c, k)
        p = torch.softmax(scores + mask, dim=-1)
        visit(offset + s, p)
        out.append(p @ v[:, :, :k_len])  # (B, H, c, hd)
    return torch.cat(out, dim=2)


def causal_mask(pos: PositionMethod, q_pos: Positions, k_pos: Positions, device, dtype) -> torch.Tensor:
    """(H or 1, Tq, Tk) float mask for queries at q_pos, the last Tq of the keys at k_pos: the
    method's score bias, -inf on future keys (by sequence order). Built once per forward pass and
    shared by all layers (the bias table is shared by them, too)."""
    q_len, k_len = len(q_pos), len(k_pos)

    def build() -> torch.Tensor:
        bias = pos.score_bias(q_pos, k_pos)
        # shape-only, so memoised like the methods' own static tensors: not rebuilt per step
        future = pos.cached(("future", q_len, k_len, device),
                            lambda: relative_distance(q_len, k_len, k_len - q_len, device) < 0)  # (q, k)
        if bias is None:
            bias = torch.zeros(1, q_len, k_len, device=device)
        return bias.to(dtype).masked_fill(future, float("-inf"))

    return pos.per_pass(("mask", q_len, k_len, device, dtype), build, q_pos, k_pos)


class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer, for decoding, and their
    position ids once any were explicit (while all are 0..length-1, none are stored)."""

    def __init__(self, n_layer: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer
        self.positions: torch.Tensor | None = None  # (length,) long, or None: 0..length-1

    def key_positions(self, queries: Positions, device) -> Positions:
        """The positions of all keys once the new tokens at `queries` join the cache: called once per
        forward pass, before its layers append their keys."""
        past = self.length
        if self.positions is None and queries.is_range:
            return Positions(0, past + len(queries))
        before = torch.arange(past, device=device) if self.positions is None else self.positions.to(device)
        self.positions = torch.cat((before, queries.tensor(device)))  # (past + T,)
        return Positions.explicit(self.positions)

    @property
    def length(self) -> int:
        first = self.layers[0]
        return 0 if first is None else first[0].size(2)

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        past = self.layers[layer]
        if past is not None:
            k, v = torch.cat((past[0], k), dim=2), torch.cat((past[1], v), dim=2)
        self.layers[layer] = (k, v)
        return k, v


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        self.visit: Visit | None = None  # set by GPT.watch_attention while a probe reads this layer

    def forward(self, x: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
                cache: KVCache | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, nh, T, hs) each
        q, k = pos.rotate(q, k, q_pos)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, nh, past+T, hs)
        visit = None if self.visit is None else functools.partial(self.visit, self.layer)
        y = causal_attention(q, k, v, pos, q_pos, k_pos, visit)  # (B, nh, T, hs)
        y = y.transpose(1, 2).reshape(B, T, D)
        return self.dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.d_model, config.mlp_ratio * config.d_model, bias=False)
        self.down = nn.Linear(config.mlp_ratio * config.d_model, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.down(F.gelu(self.up(x))))


class Block(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(config.d_model)
        self.attn = Attention(config, layer)
        self.ln_2 = nn.LayerNorm(config.d_model)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
                cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pos, q_pos, k_pos, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.vocab_size, config.d_model)
        self.pos = METHODS[config.pos](config)  # shared by all layers (T5's bias table is, too)
        # Geiping & Goldstein 2022 (cramming) normalise the embedding (on by default for the method whose
        # reference has it, scaled-sinusoidal); Le Scao et al. 2022 (BigScience, "What Language Model to
        # Train if You Have One Million GPU Hours?") found it hurts zero-shot
        self.ln_e = nn.LayerNorm(config.d_model) if config.embed_norm else None
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config, layer) for layer in range(config.n_layer))
        self.ln_f = nn.LayerNorm(config.d_model)
        self.lm_head = None if config.tie_embeddings else nn.Linear(config.d_model, config.vocab_size, bias=False)
        # GPT-2 init for the trunk; position modules initialise their own parameters
        for module in (self.wte, self.blocks, self.lm_head):
            if module is not None:
                module.apply(self._init_weights)
        # GPT-2: residual projections scaled by 1/sqrt(2 * n_layer) so the residual stream keeps
        # its scale at init whatever the depth
        for name, p in self.blocks.named_parameters():
            if name.endswith(("attn.proj.weight", "mlp.down.weight")):
                nn.init.normal_(p, std=EMBED_INIT_STD / math.sqrt(2 * config.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=EMBED_INIT_STD)

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())

    @contextlib.contextmanager
    def watch_attention(self, visit: Visit, layers: Sequence[int] | None = None):
        """Inside the block, the attention of `layers` (default all) computes its softmax explicitly
        and hands every query chunk's probabilities to visit(layer, start, p): what probes read."""
        watched = [self.blocks[i].attn for i in (range(len(self.blocks)) if layers is None else layers)]
        for attn in watched:
            attn.visit = visit
        try:
            yield
        finally:
            for attn in watched:
                attn.visit = None

    def embed(self, idx: torch.Tensor, start: int = 0, positions: Positions | torch.Tensor | None = None,
              ) -> torch.Tensor:
        """idx: (B, T) token ids at positions start.. (or at `positions`) -> (B, T, D) input of the first
        block: token embedding, the position method's embed hook, the optional LayerNorm, dropout."""
        positions = Positions.of(positions, start, idx.size(1))
        x = self.pos.embed(self.wte(idx), positions)  # (B, T, D)
        if self.ln_e is not None:
            x = self.ln_e(x)
        return self.drop(x)

    def forward(self, idx: torch.Tensor, start: int = 0, cache: KVCache | None = None,
                positions: Positions | torch.Tensor | None = None) -> torch.Tensor:
        """idx: (B, T) token ids at positions start.., or at `positions` ((T,) long ids shared by the
        batch, e.g. randomized positions) -> logits (B, T, vocab). With a cache, the keys sit at
        0..past-1 before the new tokens (or at the ids stored with them)."""
        q_pos = Positions.of(positions, start, idx.size(1))
        k_pos = q_pos if cache is None else cache.key_positions(q_pos, idx.device)
        x = self.embed(idx, positions=q_pos)  # (B, T, D)
        with self.pos.one_pass():
            for block in self.blocks:
                x = block(x, self.pos, q_pos, k_pos, cache)
        x = self.ln_f(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)  # (B, T, V)
