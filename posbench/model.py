"""A pre-LayerNorm GPT decoder whose position information comes from one pluggable module.

Read top to bottom: ModelConfig, causal_attention (the one attention kernel), Attention, MLP, Block,
GPT. The position method is built once per model and handed to every attention layer, which calls
its three hooks without knowing which method it is.
"""

from __future__ import annotations

import difflib
import functools
import math
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from .errors import PosbenchError
from .positions import METHODS, PositionMethod, relative_distance
from .positions.base import EMBED_INIT_STD

try:  # FlexAttention (torch >= 2.5): the fused kernel for score-bias methods on CUDA
    from torch.nn.attention.flex_attention import create_block_mask, flex_attention
except ImportError:  # pragma: no cover - older torch: SDPA with a float mask everywhere
    flex_attention = create_block_mask = None

# Largest float mask (elements) one attention call may hold; longer inputs are cut into query
# chunks so memory grows linearly with length instead of quadratically.
MASK_BUDGET = 1 << 24


# What a config.json written before issue 13 meant by the fields it lacks: the variant those runs
# were trained with, so they keep loading and evaluating exactly as they were trained.
# New runs get the dataclass defaults below, the reference implementations (docs/methods.md).
LEGACY = {"embed_norm": False, "sinusoid_ratio": 1.0, "t5_max_distance": 128, "fire_init_L": None,
          "softplus_params": True}


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 8
    d_model: int = 192
    max_len: int = 128  # the training length; also the table size of `learned`
    pos: str = "rotary"
    tie_embeddings: bool = True
    dropout: float = 0.0
    mlp_ratio: int = 4
    # a LayerNorm right after the embedding (BigScience found it hurts); None: as the method's
    # reference code (on for scaled-sinusoidal, as cramming; off for the others)
    embed_norm: bool | None = None
    # sinusoidal: sinusoid RMS : token std at init (Vaswani / fairseq: tokens std 1, sinusoid 1/sqrt 2)
    sinusoid_ratio: float = 0.5**0.5
    # t5: distances >= this share the last bucket; None: min(128, max_len), at least 17
    t5_max_distance: int | None = None
    # fire: the fixed init_L of its threshold |multiplier| * init_L (FIRE's code: 512); None: max_len
    fire_init_L: float | None = 512.0
    # fire's c, kerple's r1, r2 as softplus(raw) (before issue 13), not the reference's raw parameters
    softplus_params: bool = False

    def __post_init__(self) -> None:
        if self.pos not in METHODS:
            close = difflib.get_close_matches(self.pos, METHODS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PosbenchError(f"unknown position method '{self.pos}'; {hint}choose from {', '.join(METHODS)}")
        if self.d_model % self.n_head:
            raise PosbenchError(f"--dim {self.d_model} is not divisible by --heads {self.n_head}")
        if self.embed_norm is None:
            self.embed_norm = METHODS[self.pos].reference_embed_norm
        if not self.sinusoid_ratio > 0 or (self.fire_init_L is not None and not self.fire_init_L > 0):
            raise PosbenchError("sinusoid_ratio and fire_init_L must be positive")
        if self.t5_max_distance is not None and self.t5_max_distance <= 16:
            raise PosbenchError("t5_max_distance must exceed 16, the exact buckets' range")

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """A config.json's "model"; a field it lacks that its method reads gets its LEGACY value."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        method = METHODS.get(values.get("pos", cls.pos))
        reads = ("embed_norm", *method.settings) if method is not None else ()
        legacy = {k: v for k, v in LEGACY.items() if k in reads and k not in values}
        return cls(**values, **legacy)

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """The method as tables show it: pos, then +tag per setting off its default, e.g. "alibi+ln",
        "scaled-sinusoidal+noln" (without its reference LayerNorm), "t5+t5_max_distance=128"."""
        method = METHODS[self.pos]
        tags = []
        if self.embed_norm != method.reference_embed_norm:
            tags.append("ln" if self.embed_norm else "noln")
        defaults = {f.name: f.default for f in fields(self)}
        for name in method.settings:
            value = getattr(self, name)
            if value != defaults[name]:
                tags.append(name if value is True else f"{name}={'L' if value is None else format(value, 'g')}")
        return "+".join((self.pos, *tags))


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, pos: PositionMethod, start: int
) -> torch.Tensor:
    """Causal SDPA for queries at positions start.. over keys at 0..k_len-1, plus the method's
    score bias. q: (B, H, Tq, hd), k/v: (B, H, Tk, hd) -> (B, H, Tq, hd).

    Plain causal self-attention without a bias takes SDPA's is_causal kernel. Otherwise the bias
    and the causal mask are folded into one float mask, built per query chunk so it never holds
    more than MASK_BUDGET elements."""
    B, H, Tq, _ = q.shape
    Tk = k.size(2)
    if start == 0 and Tq == Tk and not pos.has_score_bias:
        return F.scaled_dot_product_attention(q, k, v, is_causal=True)
    chunk = min(Tq, max(1, MASK_BUDGET // (B * H * Tk)))
    flex = q.is_cuda and pos.has_score_bias and flex_attention is not None
    # With a bias of i - j alone, the mask of the chunk at query offset s over keys 0..start+s+c-1
    # is the last c rows and start+s+c columns of the widest chunk's mask over all Tk keys: build
    # that one (row 0 at position Tk - chunk) and slice every chunk's mask out of it.
    shared = None
    if pos.shift_invariant and chunk < Tq and Tk == start + Tq and not flex:
        shared = causal_mask(pos, chunk, Tk, Tk - chunk, q.device, q.dtype)[None]  # (1, H, chunk, Tk)
    out = []
    for s in range(0, Tq, chunk):
        qc = q[:, :, s : s + chunk]  # (B, H, c, hd)
        c = qc.size(2)
        k_len = min(Tk, start + s + c)  # later keys are all in the future of this chunk
        kc, vc = k[:, :, :k_len], v[:, :, :k_len]
        if flex:
            bias = pos.per_pass(("bias", c, k_len, start + s), functools.partial(pos.score_bias, c, k_len, start + s))
            out.append(flex_biased_attention(qc, kc, vc, bias, start + s))
            continue
        if shared is not None:
            mask = shared[:, :, chunk - c :, Tk - k_len :]  # (1, H, c, k)
        else:  # 4-D: with a 3-D mask, CPU SDPA falls back from its fused kernel to the slow math path
            mask = causal_mask(pos, c, k_len, start + s, q.device, q.dtype)[None]  # (1, H|1, c, k)
        out.append(F.scaled_dot_product_attention(qc, kc, vc, attn_mask=mask))
    return torch.cat(out, dim=2)


@functools.lru_cache(maxsize=32)
def _causal_block_mask(q_len: int, k_len: int, start: int, device: str):
    """FlexAttention's block-sparse causal mask: key j is visible to query i when j <= start + i."""
    return create_block_mask(lambda b, h, i, j: i + start >= j, None, None, q_len, k_len, device=device)


@functools.cache
def _compiled_flex():
    return torch.compile(flex_attention, dynamic=False)


def flex_biased_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, bias: torch.Tensor, start: int
) -> torch.Tensor:
    """The fused-kernel path for score-bias methods (used on CUDA): FlexAttention adds the (H, Tq, Tk)
    bias inside the kernel via score_mod and skips future blocks, so no (B, H, Tq, Tk) mask or score
    tensor is ever materialised. Equal to the SDPA path to the precision of q's dtype."""
    bias = bias.to(q.dtype)

    def add_bias(score, b, h, i, j):
        return score + bias[h, i, j]

    block_mask = _causal_block_mask(q.size(2), k.size(2), start, str(q.device))
    return _compiled_flex()(q, k, v, score_mod=add_bias, block_mask=block_mask)


def causal_mask(pos: PositionMethod, q_len: int, k_len: int, start: int, device, dtype) -> torch.Tensor:
    """(H or 1, q_len, k_len) float mask: the method's score bias, -inf on future keys. Built once
    per forward pass and shared by all layers (the bias table is shared by them, too)."""

    def build() -> torch.Tensor:
        bias = pos.score_bias(q_len, k_len, start)
        # shape-only, so memoised like the methods' own static tensors: not rebuilt per step
        future = pos.cached(("future", q_len, k_len, start, device),
                            lambda: relative_distance(q_len, k_len, start, device) < 0)  # (q, k)
        if bias is None:
            bias = torch.zeros(1, q_len, k_len, device=device)
        return bias.to(dtype).masked_fill(future, float("-inf"))

    return pos.per_pass(("mask", q_len, k_len, start, device, dtype), build)


class KVCache:
    """Keys and values of the tokens seen so far, one (k, v) pair per layer, for decoding."""

    def __init__(self, n_layer: int) -> None:
        self.layers: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * n_layer

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

    def forward(self, x: torch.Tensor, pos: PositionMethod, start: int, cache: KVCache | None) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, D // self.n_head).permute(2, 0, 3, 1, 4)
        # q, k, v: (B, nh, T, hs) each
        q, k = pos.rotate(q, k, start)
        if cache is not None:
            k, v = cache.append(self.layer, k, v)  # (B, nh, start+T, hs)
        y = causal_attention(q, k, v, pos, start)  # (B, nh, T, hs)
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

    def forward(self, x: torch.Tensor, pos: PositionMethod, start: int, cache: KVCache | None) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x), pos, start, cache)
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

    def embed(self, idx: torch.Tensor, start: int = 0) -> torch.Tensor:
        """idx: (B, T) token ids at positions start.. -> (B, T, D) input of the first block: token
        embedding, the position method's embed hook, the optional LayerNorm, dropout."""
        x = self.pos.embed(self.wte(idx), start)  # (B, T, D)
        if self.ln_e is not None:
            x = self.ln_e(x)
        return self.drop(x)

    def forward(self, idx: torch.Tensor, start: int = 0, cache: KVCache | None = None) -> torch.Tensor:
        """idx: (B, T) token ids at positions start.. -> logits (B, T, vocab)."""
        x = self.embed(idx, start)  # (B, T, D)
        with self.pos.one_pass():
            for block in self.blocks:
                x = block(x, self.pos, start, cache)
        x = self.ln_f(x)
        head = self.wte.weight if self.lm_head is None else self.lm_head.weight
        return F.linear(x, head)  # (B, T, V)
