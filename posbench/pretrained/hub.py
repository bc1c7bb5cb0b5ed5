"""Loading `hf:MODEL` — a Hugging Face hub name or a local folder — through the optional `transformers`
package: its config, its tokenizer, the model in posbench's shapes (adapter.CausalLM). Every way this
fails on the user's side (transformers missing, no such model, not a causal LM) is one PosbenchError.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import torch

from ..common import cpu_has_fast_bf16
from ..errors import PosbenchError
from . import PREFIX, model_name
from .adapter import CausalLM, out_of_memory
from .architectures import alibi_slopes, position_table, rope_scaled, trained_context

if TYPE_CHECKING:  # transformers is optional: named in annotations only
    from transformers import PretrainedConfig, PreTrainedTokenizerBase

INSTALL = "pip install 'posbench[hf]'"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def transformers_module() -> ModuleType:
    """The transformers package, quiet (no progress bars, errors only), or a one-line error saying
    how to install it."""
    try:
        import transformers
    except ImportError:
        raise PosbenchError(f"hf: models need the optional transformers package: {INSTALL}") from None
    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    return transformers


def _looks_local(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or Path(name).expanduser().exists()


def _source(spec: str) -> str:
    """The name transformers is given: a local folder (which must exist) or a hub name."""
    name = model_name(spec)
    if not name:
        raise PosbenchError(f"'{spec}' names no model: use {PREFIX}NAME (a hub name like gpt2, or a local folder)")
    if _looks_local(name):
        path = Path(name).expanduser()
        if not path.is_dir():
            raise PosbenchError(f"{spec}: no folder {path} (a local model is a folder with config.json and weights)")
        return str(path)
    return name


def _loading(spec: str, what: str, load, *args, **kwargs):
    """load(*args, **kwargs), its failures as one line naming the model."""
    try:
        return load(*args, **kwargs)
    except (OSError, ValueError, KeyError, ImportError) as e:
        first = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise PosbenchError(f"cannot load the {what} of {spec}: {first}") from None


def load_config(spec: str) -> PretrainedConfig:
    """The model's config, refused unless transformers has a causal LM class for it (or the folder
    names its own code, which posbench does not run: trust_remote_code stays off)."""
    transformers = transformers_module()
    config = _loading(spec, "config", transformers.AutoConfig.from_pretrained, _source(spec))
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES as CAUSAL

    if config.model_type not in CAUSAL:
        raise PosbenchError(f"{spec} is a {config.model_type} model, which transformers has no causal "
                            "language model (AutoModelForCausalLM) for; posbench scores next-token prediction")
    return config


def load_tokenizer(spec: str) -> PreTrainedTokenizerBase:
    return _loading(spec, "tokenizer", transformers_module().AutoTokenizer.from_pretrained, _source(spec))


def resolve_dtype(precision: str | None, device: torch.device) -> torch.dtype:
    """The weights' dtype: fp32 or bf16 as asked; default (None) fp32 on the CPU and bf16 on CUDA, as
    posbench's own runs compute; auto: bf16 on CUDA and on CPUs with bf16 instructions."""
    if precision is None:
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if precision == "auto":
        return torch.bfloat16 if device.type == "cuda" or cpu_has_fast_bf16() else torch.float32
    if precision not in DTYPES:
        raise PosbenchError(f"--precision must be fp32, bf16 or auto, got '{precision}'")
    return DTYPES[precision]


def display_name(spec: str) -> str:
    """hf: and a hub name as given; a local folder by its last part (tables stay narrow)."""
    name = model_name(spec)
    return PREFIX + (Path(name).name if _looks_local(name) else name)


def load_model(spec: str, device: str | torch.device = "cpu", precision: str | None = None,
               attention: str | None = None, rope_scaling: tuple[str, float] | None = None) -> CausalLM:
    """The model of `spec` in eval mode on `device`, in posbench's shapes. attention: transformers'
    attn_implementation ("eager" where attention weights are read; None: the architecture's default,
    SDPA where it has it). rope_scaling: (kind, factor),
    set in the model's own config before it is built (architectures.rope_scaled)."""
    transformers = transformers_module()
    device = torch.device(device)
    config = load_config(spec)
    context = trained_context(config)
    if rope_scaling is not None:
        rope_scaled(config, *rope_scaling, context, spec)
    auto = transformers.AutoModelForCausalLM
    options = {"attn_implementation": attention} if attention else {}
    dtype = resolve_dtype(precision, device)
    try:
        model = _loading(spec, "weights", auto.from_pretrained, _source(spec), config=config, dtype=dtype,
                         **options)
        model = model.to(device).eval()
    except RuntimeError as e:
        if not out_of_memory(e):
            raise
        raise PosbenchError(f"{spec} does not fit in memory on {device} in {dtype} (its weights alone)") from None
    return CausalLM(model, display_name(spec), context, alibi_slopes(model), position_table(model))
