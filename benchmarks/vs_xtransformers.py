"""posbench against x-transformers, a general-purpose library with every option behind flags.

    pip install -c constraints.txt x-transformers   # not a posbench dependency; only this script needs it
    python benchmarks/vs_xtransformers.py [--threads 2] [--steps 4] [--repeats 3]

Both sides get the same shape (layers, width, heads, head size, 4x GELU MLP, tied embeddings, pre-LN)
and the same training step (forward + cross-entropy + backward + AdamW, `posbench.experiments.bench.train_rate`).
x-transformers gets its fastest settings for each method: `attn_flash=True` (SDPA) wherever it
allows it (it refuses it for T5), full-width rotary (`rotary_emb_dim` = head size). Models take
turns one step at a time; the ratio is the median over rounds of the two sides' step times within
a round (with the middle half of those ratios), so drift in machine speed hits both sides alike.
The target: the methods both implement (ALiBi, rotary, T5) be clearly faster in posbench.
"""

from __future__ import annotations

import functools

import torch
from common import (  # benchmarks/common.py
    paired_ratio,
    paired_step_times,
    parse_shape_args,
    shape_config,
    tokens_per_second,
)

from posbench import GPT, ModelConfig

try:
    from x_transformers import Decoder, TransformerWrapper
except ImportError:  # keep the message short and actionable
    raise SystemExit("this benchmark needs x-transformers: pip install -c constraints.txt x-transformers") from None

# posbench method -> x-transformers Decoder flags that select the same position method.
XT_FLAGS: dict[str, dict] = {
    "none": {"attn_flash": True},
    "learned": {"attn_flash": True},
    "rotary": {"attn_flash": True, "rotary_pos_emb": True},
    "alibi": {"attn_flash": True, "alibi_pos_bias": True},
    "t5": {"rel_pos_bias": True},  # x-transformers: "flash attention not compatible with t5"
}


def xt_model(c: ModelConfig, pos: str) -> torch.nn.Module:
    head_size = c.d_model // c.n_head
    flags = dict(XT_FLAGS[pos])
    if pos == "rotary":
        flags["rotary_emb_dim"] = head_size  # posbench rotates the whole head; x-transformers defaults to half
    decoder = Decoder(dim=c.d_model, depth=c.n_layer, heads=c.n_head, attn_dim_head=head_size, ff_mult=4,
                      verbose=False, **flags)
    return TransformerWrapper(
        num_tokens=c.vocab_size,
        max_seq_len=c.train_len,
        attn_layers=decoder,
        use_abs_pos_emb=pos == "learned",
        tie_embedding=True,
    )


def main() -> None:
    args = parse_shape_args(__doc__, steps=4)
    torch.manual_seed(0)

    builders = {}
    for pos in XT_FLAGS:
        builders["posbench", pos] = functools.partial(GPT, shape_config(args, pos))
        builders["x-transformers", pos] = functools.partial(xt_model, shape_config(args, pos), pos)
    models = {key: build() for key, build in builders.items()}  # for the parameter counts
    times = paired_step_times(builders, args)
    print(f"{'method':10s} {'posbench tok/s':>15s} {'x-transformers':>15s} {'ratio':>6s} {'middle half':>12s}  "
          "params (posbench / x-t)")
    for pos in XT_FLAGS:
        ours, theirs = (tokens_per_second(times, (lib, pos), args) for lib in ("posbench", "x-transformers"))
        ratio, low, high = paired_ratio(times, ("posbench", pos), ("x-transformers", pos))
        n_ours = sum(p.numel() for p in models["posbench", pos].parameters())
        n_theirs = sum(p.numel() for p in models["x-transformers", pos].parameters())
        print(f"{pos:10s} {ours:15,.0f} {theirs:15,.0f} {ratio:6.2f} {low:5.2f}-{high:<6.2f}  "
              f"{n_ours:,} / {n_theirs:,}")


if __name__ == "__main__":
    main()
