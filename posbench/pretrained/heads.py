"""`posbench inspect-heads hf:MODEL`: per-head span, entropy and sink from a pretrained model's own
attention weights (eager attention), through the probe posbench's runs go through (evaluation/heads.py);
for an ALiBi model the slope of every head, read from the model, and the slope-span correlation with
its interval over windows.
"""

from __future__ import annotations

from ..errors import PosbenchError
from ..evaluation.heads import SAMPLES, build_report, head_stats, spread_windows
from .evaluate import DEFAULT_DATA
from .hub import display_name, load_model, load_tokenizer
from .tokens import held_out

BATCH = 1  # windows per forward pass: transformers returns every layer's (H, N, N) weights at once


def inspect_model_heads(spec: str, length: int | None = None, samples: int = SAMPLES, split: str = "valid",
                        layer: int | None = None, data: str | None = None, device: str = "cpu",
                        precision: str | None = None, batch_size: int = BATCH) -> dict:
    """The inspect-heads report of `hf:MODEL` on `samples` windows of `length` tokens (default: its
    trained context) spread over `data`'s held-out split (default pydocs) in the model's tokens."""
    name = display_name(spec)
    model = load_model(spec, device, precision, attention="eager")
    tokenizer = load_tokenizer(spec)
    length = length or model.config.train_len
    model.check_length(length)
    n_layer = model.config.n_layer
    if layer is not None and not 0 <= layer < n_layer:
        raise PosbenchError(f"--layer {layer} is out of range: the model has layers 0..{n_layer - 1}")
    data = data or DEFAULT_DATA
    tokens, _, notes = held_out(tokenizer, data, split, model.config.vocab_size, name)
    windows = spread_windows(tokens, split, length, samples)
    layers = list(range(n_layer)) if layer is None else [layer]
    stats = head_stats(model, windows, layers, batch_size)  # its probe runs under no_grad
    extra = {"split": split, "samples": len(windows), "data": data, **({"notes": notes} if notes else {})}
    return build_report(spec, model, stats, layers, length, extra)
