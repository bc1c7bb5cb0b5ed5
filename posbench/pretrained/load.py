"""hf:NAME -> a PretrainedModel and its tokenizer: a hub name (downloaded once by transformers, or read
from its cache offline) or a local folder. The optional extra: pip install 'posbench[hf]'."""

from __future__ import annotations

import torch

from ..errors import PosbenchError
from .model import PretrainedModel
from .tokens import PretrainedTokenizer

try:  # optional: posbench's own runs need none of it
    import transformers
except ImportError:  # pragma: no cover - exercised where the extra is not installed
    transformers = None

PRETRAINED_PREFIX = "hf:"
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def is_pretrained(run) -> bool:
    """True for a run argument naming a Hugging Face model: hf:NAME."""
    return isinstance(run, str) and run.startswith(PRETRAINED_PREFIX)


def load_pretrained(run: str, device: str = "cpu", precision: str = "fp32"
                    ) -> tuple[PretrainedModel, PretrainedTokenizer]:
    """The model (eager attention, so the heads probe reads its weights; eval mode) and its tokenizer."""
    if transformers is None:
        raise PosbenchError("hf: models need the transformers library: pip install 'posbench[hf]'")
    if precision not in DTYPES:
        raise PosbenchError(f"--precision for hf: models is fp32 or bf16, got '{precision}'")
    name = run.removeprefix(PRETRAINED_PREFIX)
    if not name:
        raise PosbenchError("hf: needs a model name or folder, e.g. hf:gpt2")
    try:
        hf_model = transformers.AutoModelForCausalLM.from_pretrained(name, attn_implementation="eager",
                                                                     dtype=DTYPES[precision])
        hf_tokenizer = transformers.AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PosbenchError(f"cannot load {run}: {first} (a hub name needs the hub or its local cache; "
                            "a folder needs config.json, the weights and the tokenizer files)") from None
    return PretrainedModel(hf_model.to(device), name), PretrainedTokenizer(hf_tokenizer)
