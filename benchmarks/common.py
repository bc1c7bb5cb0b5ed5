"""What the training-speed benchmarks share: the model-shape and timing flags."""

from __future__ import annotations

import argparse

import torch

from posbench import ModelConfig
from posbench.bench import train_rate


def parse_shape_args(doc: str, steps: int, rounds: int, lengths: str | None = None) -> argparse.Namespace:
    """Parse --threads --steps --batch --train-len --dim --layers --heads --rounds (defaults: the
    default posbench model) and set torch's thread count. With `lengths` (a default such as
    "256,512"), --train-len takes a comma-separated list, in args.lengths (args.seq_len: the first)."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = ModelConfig()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=steps)
    p.add_argument("--batch", type=int, default=16)
    if lengths is None:
        p.add_argument("--train-len", "--seq-len", dest="seq_len", type=int, default=defaults.train_len)
    else:
        p.add_argument("--train-len", "--seq-len", dest="lengths", default=lengths,
                       help="training lengths, comma-separated")
    p.add_argument("--dim", type=int, default=defaults.d_model)
    p.add_argument("--layers", type=int, default=defaults.n_layer)
    p.add_argument("--heads", type=int, default=defaults.n_head)
    p.add_argument("--rounds", type=int, default=rounds, help="interleaved rounds; the best round counts")
    args = p.parse_args()
    if lengths is not None:
        args.lengths = [int(n) for n in args.lengths.split(",")]
        args.seq_len = args.lengths[0]
    torch.set_num_threads(args.threads)
    return args


def shape_config(args: argparse.Namespace, pos: str) -> ModelConfig:
    return ModelConfig(n_layer=args.layers, n_head=args.heads, d_model=args.dim, train_len=args.seq_len, pos=pos)


def best_train_rates(models: dict, args: argparse.Namespace) -> dict:
    """Training tokens/s per model, best of args.rounds rounds; models are interleaved within a
    round, so drift in the machine's speed hits every model alike. Then prints the shape line."""
    vocab = ModelConfig().vocab_size
    rates: dict = {}
    for round in range(args.rounds):
        for key, model in models.items():
            rate = train_rate(model, args.batch, args.seq_len, vocab, args.steps, warmup=2 if round == 0 else 1)
            rates[key] = max(rates.get(key, 0.0), rate)
    print(f"threads {args.threads}, d={args.dim}, layers={args.layers}, heads={args.heads}, "
          f"T={args.seq_len}, batch={args.batch}, best of {args.rounds} rounds x {args.steps} steps")
    return rates
