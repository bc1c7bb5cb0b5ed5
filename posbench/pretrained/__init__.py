"""Pretrained Hugging Face causal LMs (`hf:MODEL`: a hub name or a local folder) probed like posbench's
own runs: eval-extrapolate, context use, compare and inspect-heads, through the optional `transformers`
package (`pip install 'posbench[hf]'`).

hub.py loads a model and its tokenizer; architectures.py is the one place that knows where an
architecture keeps what posbench reads (its trained context, learned position table, ALiBi slopes,
rope-scaling config); tokens.py tokenises a corpus with the model's own tokenizer and counts each
piece's UTF-8 bytes; adapter.py gives the model posbench's shapes (logits for scoring.py, attention
probabilities for heads.py). The workflows (evaluate.py, heads.py, compare.py) reuse the scoring,
statistics and reports posbench's own runs go through.
"""

from __future__ import annotations

from pathlib import Path

PREFIX = "hf:"


def is_pretrained(spec: str | Path | None) -> bool:
    """True for `hf:NAME` (a command-line argument naming a Hugging Face model, not a run folder)."""
    return spec is not None and str(spec).startswith(PREFIX)


def model_name(spec: str | Path) -> str:
    """'hf:EleutherAI/pythia-160m' -> 'EleutherAI/pythia-160m' (a hub name or a local folder)."""
    return str(spec).removeprefix(PREFIX)
