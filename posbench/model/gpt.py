"""A pre-LayerNorm GPT decoder whose position information comes from one pluggable module.

Read top to bottom: KVCache, Attention, MLP, Block, GPT (its settings, ModelConfig, are in
config.py; the attention function with its fast paths is in attention.py). The position method is
built once per model and handed to every attention layer, which calls its hooks without knowing
which method it is. Position ids (positions.Positions) say where each token sits; the order of the
sequence alone says what is causal: queries are the last Tq of the Tk keys, whatever their ids.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..positions import METHODS, TEMPERATURES, PositionMethod, Positions
from ..positions.base import EMBED_INIT_STD
from ..runs.config import ModelConfig
from .attention import Visit, causal_attention
from .decay import decay_sums, fold_decay


class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer, for decoding, and their
    position ids once any were explicit (while all are 0..length-1, none are stored). Each layer's
    keys and values live in buffers that double when full, so appending T tokens copies O(T) in all
    (a chunked prefill of a 16k window would otherwise copy the growing cache once per chunk)."""

    def __init__(self, n_layer: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer  # (B, H, capacity, hd)
        self.filled = [0] * n_layer  # tokens held per layer
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
        return self.filled[0]

    def append(self, layer: int, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Add the new tokens' (B, H, T, *) keys, values (and running decay sums, decay.py) to
        `layer`'s; returns all of them, (B, H, past + T, *) each."""
        past, end = self.filled[layer], self.filled[layer] + tensors[0].size(2)
        buffers = self.layers[layer]
        if buffers is None or buffers[0].size(2) < end:
            capacity = max(end, 2 * past)
            grown = tuple(t.new_empty(*t.shape[:2], capacity, t.size(3)) for t in tensors)
            if buffers is not None:
                for new, old in zip(grown, buffers, strict=True):
                    new[:, :, :past] = old[:, :, :past]
            buffers = self.layers[layer] = grown
        for buffer, t in zip(buffers, tensors, strict=True):
            buffer[:, :, past:end] = t
        self.filled[layer] = end
        return tuple(buffer[:, :, :end] for buffer in buffers)

    def last(self, layer: int, index: int) -> torch.Tensor | None:
        """(B, H, 1, *) the last cached token's entry `index` of append's tensors (2: the decay sums),
        or None while the layer holds no token."""
        if not self.filled[layer]:
            return None
        return self.layers[layer][index][:, :, self.filled[layer] - 1 :][:, :, :1]


class Attention(nn.Module):
    def __init__(self, config: ModelConfig, layer: int) -> None:
        super().__init__()
        self.layer = layer
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.d_model, 3 * config.d_model, bias=False)
        self.proj = nn.Linear(config.d_model, config.d_model, bias=False)
        self.dropout = nn.Dropout(config.dropout)
        # a logit temperature (SSMax, Llama 4's), its parameters this layer's own; None: none
        self.temperature = None if config.temperature is None else TEMPERATURES[config.temperature](config)
        self.visit: Visit | None = None  # set by GPT.watch_attention while a probe reads this layer

    def forward(self, x: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
                cache: KVCache | None) -> torch.Tensor:
        qkv = self.qkv(x)  # (B, T, 3D)
        if qkv.device.type == "cpu" and torch.is_autocast_enabled("cpu"):
            # CPU bf16: fp32 from the projection in to the projection out, as the CPU's bf16 SDPA backward
            # and the rotation's mixed-dtype multiplies cost more than bf16 saves there (docs/benchmarks.md);
            # the projections, MLP and head, nearly all the FLOPs, stay bf16
            with torch.autocast("cpu", enabled=False):
                y = self.attend(qkv.float(), x, pos, q_pos, k_pos, cache)
        else:
            y = self.attend(qkv, x, pos, q_pos, k_pos, cache)  # (B, T, D)
        return self.dropout(self.proj(y))

    def attend(self, qkv: torch.Tensor, x: torch.Tensor, pos: PositionMethod, q_pos: Positions, k_pos: Positions,
               cache: KVCache | None) -> torch.Tensor:
        """qkv: (B, T, 3D) the projected queries, keys and values of the block input x (B, T, D) -> (B, T, D)
        the heads' outputs, joined, before the output projection."""
        B, T, D = x.shape
        q, k, v = qkv.view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, nh, T, hs) each
        q, k = pos.rotate(q, k, q_pos)
        k, v, sums = self.all_keys(k, v, pos.log_decay(x), cache)  # (B, nh, past+T, *)
        if self.temperature is not None:
            q = self.temperature(q, pos, k.size(2))
        if sums is not None:
            q, k, v = fold_decay(q, k, v, sums)  # (B, nh, *, D): the decay as a key channel, D > hs
        visit = None if self.visit is None else functools.partial(self.visit, self.layer)
        y = causal_attention(q, k, v, pos, q_pos, k_pos, visit)[..., : D // self.n_head]  # (B, nh, T, hs)
        return y.transpose(1, 2).reshape(B, T, D)

    def all_keys(self, k: torch.Tensor, v: torch.Tensor, log_decay: torch.Tensor | None, cache: KVCache | None
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The keys and values of the cached tokens and the new ones, and the running sums of a
        data-dependent decay (decay.py) over all of them, or None without one (log_decay None)."""
        if log_decay is None:
            return (k, v, None) if cache is None else (*cache.append(self.layer, k, v), None)
        carry = None if cache is None else cache.last(self.layer, 2)  # the sums continue from the cached ones
        new = (k, v, decay_sums(log_decay, carry))
        return new if cache is None else cache.append(self.layer, *new)


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
        # one method for the model: shared by all layers (T5's bias table is, too), or with a part
        # per layer (for_layer: hybrids, FoX's forget gates)
        self.pos = METHODS[config.pos](config)
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

    def position_methods(self) -> list[PositionMethod]:
        """The model's method and every distinct part its layers use (hybrids, per-layer methods)."""
        parts = [self.pos, *(self.pos.for_layer(i) for i in range(len(self.blocks)))]
        return list({id(m): m for m in parts}.values())

    def after_step(self, step: int, progress: float) -> None:
        """The training loop's call after each optimizer step, for every method the model uses."""
        for method in self.position_methods():
            method.after_step(step, progress)

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
        with contextlib.ExitStack() as stack:
            for method in self.position_methods():
                stack.enter_context(method.one_pass())
            for layer, block in enumerate(self.blocks):
                x = block(x, self.pos.for_layer(layer), q_pos, k_pos, cache)
        x = self.ln_f(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)  # (B, T, V)
