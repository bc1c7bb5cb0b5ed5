"""Pretrained Hugging Face causal language models behind the interface posbench's scoring and heads
probe read (what a GPT offers them), so `eval-extrapolate hf:NAME` and `inspect-heads hf:NAME` run the
same protocol on checkpoints no CPU could train: the same blocks at every length, paired intervals,
context use, per-head spans. Needs the optional extra: pip install 'posbench[hf]'.

Architecture-specific reading (where a model keeps its trained context, its ALiBi slopes, how its
tokens map to bytes) lives here and nowhere else."""

from .load import PRETRAINED_PREFIX, is_pretrained, load_pretrained
from .model import PretrainedModel
from .tokens import PretrainedTokenizer

__all__ = ["PRETRAINED_PREFIX", "PretrainedModel", "PretrainedTokenizer", "is_pretrained", "load_pretrained"]
