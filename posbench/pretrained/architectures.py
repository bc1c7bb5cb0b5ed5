"""Where each architecture keeps what posbench reads: its trained context, a learned position table,
ALiBi slopes, its rope-scaling config. The one module that names architectures (Hugging Face
`model_type`s); the workflows ask it and never name one, as they never name a position method.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from ..errors import PosbenchError

if TYPE_CHECKING:  # transformers is optional: named in annotations only
    from transformers import PretrainedConfig

# A config that records no context length: what the model was trained on. BLOOM: sequences of 2048
# tokens (BigScience 2022, "BLOOM: A 176B-Parameter Open-Access Multilingual Language Model", its
# training hyperparameters); its config.json has no such field (ALiBi needs none).
TRAINED_CONTEXT = {"bloom": 2048}
# the config fields other architectures name it by, first found wins (GPT-2's n_positions is also
# its max_position_embeddings through the config's attribute_map; MPT: max_seq_len)
CONTEXT_FIELDS = ("max_position_embeddings", "n_positions", "n_ctx", "max_seq_len", "seq_length",
                  "max_sequence_length")
# modules holding learned absolute positions (GPT-2 and GPT-Neo: wpe; OPT: embed_positions, whose
# OPTLearnedPositionalEmbedding keeps `offset` = 2 extra rows, modeling_opt.py): past the table the
# model cannot run (an index error on the CPU, a device-side assert on CUDA)
POSITION_TABLES = ("wpe", "embed_positions", "position_embeddings")
# posbench's --rope-scaling kinds -> transformers' rope_type (modeling_rope_utils.py ROPE_INIT_FUNCTIONS);
# transformers has no static NTK-aware kind, its "dynamic" is NTK by length
ROPE_TYPES = {"linear": "linear", "dynamic": "dynamic", "yarn": "yarn"}


def trained_context(config: PretrainedConfig) -> int:
    """The length the model was trained on: what the default lengths and the ratios "× at L" start from.
    A field of the config first, else what the architecture is known to be trained at."""
    for field in CONTEXT_FIELDS:
        value = getattr(config, field, None)
        if isinstance(value, int) and value > 0:
            return value
    if config.model_type in TRAINED_CONTEXT:
        return TRAINED_CONTEXT[config.model_type]
    raise PosbenchError(f"cannot tell the trained context of this {config.model_type} model from its config "
                        f"(none of {', '.join(CONTEXT_FIELDS)})")


def position_table(model: torch.nn.Module) -> int | None:
    """How many positions a learned absolute table holds (the longest window the model can take), or
    None when it has none (rotary, ALiBi, no positions)."""
    for name, module in model.named_modules():
        if name.rpartition(".")[2] in POSITION_TABLES and isinstance(module, torch.nn.Embedding):
            return module.num_embeddings - getattr(module, "offset", 0)
    return None


def _attn_config(config, key: str, default):
    attn = getattr(config, "attn_config", None) or {}
    return attn.get(key, default) if isinstance(attn, dict) else getattr(attn, key, default)


def _bias_of_first_positions(alibi: torch.Tensor, n_head: int) -> list[float]:
    """Per head, the bias at key 1 minus at key 0 of an all-ones 2-token window: the slope."""
    alibi = alibi.float().reshape(n_head, -1)
    return (alibi[:, 1] - alibi[:, 0]).tolist()


def _bloom_slopes(module, config, n_head: int) -> list[float]:
    # modeling_bloom.py (and modeling_falcon.py) build_alibi_tensor(mask, num_heads, dtype):
    # (B * H, 1, T), slope_h * j for key j of an all-ones mask (Falcon rounds the slopes to bf16 first)
    return _bias_of_first_positions(module.build_alibi_tensor(torch.ones(1, 2), n_head, torch.float32), n_head)


def _falcon_slopes(module, config, n_head: int) -> list[float] | None:
    return _bloom_slopes(module, config, n_head) if getattr(config, "alibi", False) else None


def _mpt_slopes(module, config, n_head: int) -> list[float] | None:
    # modeling_mpt.py build_mpt_alibi_tensor(num_heads, sequence_length, alibi_bias_max): (H, 1, T),
    # slope_h * (j - (T - 1))
    if not _attn_config(config, "alibi", True):
        return None
    alibi = module.build_mpt_alibi_tensor(n_head, 2, _attn_config(config, "alibi_bias_max", 8))
    return _bias_of_first_positions(alibi, n_head)


ALIBI: dict[str, Callable] = {"bloom": _bloom_slopes, "falcon": _falcon_slopes, "mpt": _mpt_slopes}


def alibi_slopes(model: torch.nn.Module) -> list[float] | None:
    """The ALiBi slope of every head, read from the model's own code (the function its forward pass
    builds the bias with, in the module that defines it), or None for a model without ALiBi."""
    config = model.config
    reader = ALIBI.get(config.model_type)
    if reader is None:
        return None
    module = sys.modules[type(model).__module__]
    slopes = reader(module, config, config.num_attention_heads)
    if slopes is not None and not all(math.isfinite(s) and s > 0 for s in slopes):
        raise PosbenchError(f"the {config.model_type} model's ALiBi slopes read as {slopes}; expected positive")
    return slopes


def has_rope(config: PretrainedConfig) -> bool:
    """True where the config carries rotary parameters transformers rescales (rope_parameters from
    transformers 5, rope_scaling before)."""
    if isinstance(getattr(config, "rope_parameters", None), dict):
        return bool(config.rope_parameters)
    return hasattr(config, "rope_scaling") and hasattr(config, "max_position_embeddings")


def rope_scaled(config: PretrainedConfig, kind: str, factor: float, context: int, name: str) -> PretrainedConfig:
    """`config` with its rope scaling set as transformers names it: --rope-scaling linear / dynamic /
    yarn at `factor`, from the trained `context` (yarn's original_max_position_embeddings). In place;
    returns it. An architecture without rotary positions, or with RoPE per layer type, is refused."""
    if kind not in ROPE_TYPES:
        raise PosbenchError(f"--rope-scaling {kind} has no counterpart in transformers for {name}: use "
                            f"{', '.join(ROPE_TYPES)} (dynamic is transformers' NTK scaling by length)")
    if not factor > 0:
        raise PosbenchError(f"--rope-factor must be positive, got {factor}")
    if not has_rope(config):
        raise PosbenchError(f"--rope-scaling: {name} ({config.model_type}) has no rotary positions to rescale")
    params = {"rope_type": ROPE_TYPES[kind], "factor": float(factor)}
    if kind == "yarn":
        params["original_max_position_embeddings"] = context
    current = getattr(config, "rope_parameters", None)
    if isinstance(current, dict):  # transformers >= 5: one dict, or one per layer type
        if any(isinstance(v, dict) for v in current.values()):
            raise PosbenchError(f"--rope-scaling: {name} sets RoPE per layer type; posbench does not map that")
        config.rope_parameters = {**current, **params}
    else:  # transformers 4: rope_scaling beside rope_theta
        config.rope_scaling = {**params, "type": params["rope_type"]}
    return config
