"""What the training-speed benchmarks share: the model-shape and timing flags, and the timing itself."""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from posbench import ModelConfig


def parse_shape_args(doc: str, steps: int, lengths: str | None = None, dim: int | None = None,
                     methods: str | None = None) -> argparse.Namespace:
    """Parse --threads --steps --repeats --batch --train-len --dim --layers --heads (defaults: the default
    posbench model, or `dim`) and set torch's thread count. With `lengths` (a default such as
    "256,512"), --train-len takes a comma-separated list, in args.lengths (args.seq_len: the first);
    with `methods`, --methods takes one too, in args.methods."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    defaults = ModelConfig()
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--steps", type=int, default=steps, help="timed steps per model and repeat, taken in turns")
    p.add_argument("--repeats", type=int, default=3, help="times the models are built afresh and timed again")
    p.add_argument("--batch", type=int, default=16)
    if lengths is None:
        p.add_argument("--train-len", "--seq-len", dest="seq_len", type=int, default=defaults.train_len)
    else:
        p.add_argument("--train-len", "--seq-len", dest="lengths", default=lengths,
                       help="training lengths, comma-separated")
    p.add_argument("--dim", type=int, default=dim or defaults.d_model)
    p.add_argument("--layers", type=int, default=defaults.n_layer)
    p.add_argument("--heads", type=int, default=defaults.n_head)
    if methods is not None:
        p.add_argument("--methods", default=methods, help="position methods, comma-separated")
    args = p.parse_args()
    if methods is not None:
        args.methods = args.methods.split(",")
    if lengths is not None:
        args.lengths = [int(n) for n in args.lengths.split(",")]
        args.seq_len = args.lengths[0]
    torch.set_num_threads(args.threads)
    return args


def shape_config(args: argparse.Namespace, pos: str) -> ModelConfig:
    return ModelConfig(n_layer=args.layers, n_head=args.heads, d_model=args.dim, train_len=args.seq_len, pos=pos)


def train_step(model: torch.nn.Module, batch: int, train_len: int, vocab: int):
    """A function that runs one training step of `model` (forward, cross-entropy, backward, AdamW)
    on a fixed random batch and returns its seconds."""
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    x = torch.randint(0, vocab, (batch, train_len + 1))

    def step() -> float:
        start = time.perf_counter()
        logits = model(x[:, :-1])
        F.cross_entropy(logits.flatten(0, 1).float(), x[:, 1:].flatten()).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start

    return step


def best_train_rates(builders: dict, args: argparse.Namespace) -> dict:
    """Training tokens/s per model from its fastest step. `builders` maps a name to a function that
    builds the model. The models take turns one step at a time, so a slow spell of a shared machine
    hits all of them alike, and the fastest step is the least disturbed one (as timeit takes the
    minimum). The models are built afresh for each of args.repeats repeats: one process's allocation
    can leave a model persistently ~20% slow on this kind of machine, and a rebuild re-rolls it.
    Then prints the shape line."""
    vocab = ModelConfig().vocab_size
    fastest: dict = {}
    for _ in range(args.repeats):
        steps = {key: train_step(build(), args.batch, args.seq_len, vocab) for key, build in builders.items()}
        for step in steps.values():  # warm-up: allocator, optimizer state, memoised position tables
            step()
        for _ in range(args.steps):
            for key, step in steps.items():
                fastest[key] = min(fastest.get(key, float("inf")), step())
        del steps
    print(f"threads {args.threads}, d={args.dim}, layers={args.layers}, heads={args.heads}, "
          f"T={args.seq_len}, batch={args.batch}, fastest of {args.repeats} x {args.steps} interleaved steps per model")
    return {key: args.batch * args.seq_len / seconds for key, seconds in fastest.items()}
