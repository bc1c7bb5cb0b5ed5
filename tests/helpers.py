"""Helpers the tests import (conftest.py keeps only fixtures): tiny models and runs, a corpus, the CLI."""

import sys

import pytest
import torch

from posbench import GPT, ModelConfig, cli
from posbench.positions import METHODS
from posbench.runs.config import RunConfig

# every method, and a temperature on a method of each kind (one layer kind; per-layer parts)
ALL_METHODS = [*sorted(METHODS), "rotary+ssmax", "irope+llama4"]


def tiny_config(pos: str, **overrides) -> ModelConfig:
    values = dict(vocab_size=64, n_layer=2, n_head=4, d_model=32, train_len=32, pos=pos)
    values.update(overrides)
    return ModelConfig(**values)


def tiny_model(pos: str, seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_config(pos, **overrides))
    # random (not zero) parameters everywhere, so a bias or scale that is ignored shows up
    with torch.no_grad():
        for p in model.pos.parameters():
            p.normal_(0, 0.5)
        for block in model.blocks:  # a temperature's (SSMax's s): positive, different per head
            for p in [] if block.attn.temperature is None else block.attn.temperature.parameters():
                p.uniform_(0.2, 0.8)
    return model.eval()


def write_corpus(folder, n_lines: int = 400) -> str:
    """A small deterministic English-like text file; returns its path."""
    import random

    rng = random.Random(0)
    words = "the a position method trains short and tests long while heads attend far or near".split()
    lines = [" ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "." for _ in range(n_lines)]
    path = folder / "corpus.txt"
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def tiny_train(corpus_path: str, pos: str = "alibi", **overrides):
    """(ModelConfig, TrainConfig) for a run of a few seconds."""
    from posbench.train import TrainConfig

    model = ModelConfig(n_layer=1, n_head=2, d_model=16, pos=pos)
    values = dict(data=corpus_path, tokenizer="bytes", train_len=16, batch_size=4, steps=6, warmup=2,
                  eval_every=3, eval_tokens=256, log_every=1, save_every=3, device="cpu")
    values.update(overrides)
    return model, TrainConfig(**values)


def run_cli(args, capsys, monkeypatch):
    """(exit code, stdout, stderr) of `posbench ARGS`, run in-process through the real entry point."""
    monkeypatch.setattr(sys, "argv", ["posbench", *args])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


def capture_saved_models(monkeypatch) -> list[GPT]:
    """Copies of the in-memory model, taken each time training writes model.safetensors (a spy on
    posbench.train.save_weights): what a test compares the written file against."""
    import copy

    from posbench import train as train_module

    saved, write = [], train_module.save_weights

    def spy(run_dir, model, config):
        saved.append(copy.deepcopy(model).eval())
        return write(run_dir, model, config)

    monkeypatch.setattr(train_module, "save_weights", spy)
    return saved


def initial_weights(config: RunConfig) -> dict[str, torch.Tensor]:
    """The state_dict the run described by `config` starts from: the same seed, the same init."""
    torch.manual_seed(config.train.seed)
    return GPT(config.model).state_dict()


def assert_trained(weights: dict[str, torch.Tensor], config: RunConfig) -> None:
    """Weights a run really trained: no matrix all zero, and every tensor moved from its init."""
    init = initial_weights(config)
    assert weights.keys() == init.keys()
    for name, tensor in weights.items():
        if tensor.ndim >= 2:
            assert tensor.abs().max() > 0, f"{name} is all zero"
        assert not torch.equal(tensor, init[name]), f"{name} is still at its init"


def logits_on(model: GPT, tokens) -> torch.Tensor:
    """(1, T, vocab) logits of `model` in eval mode on one sequence of token ids."""
    with torch.no_grad():
        return model.eval()(torch.as_tensor(tokens, dtype=torch.long)[None])


def span(q_len: int, k_len: int, start: int):
    """(query, key) Positions of the offset path: queries at start..start+q_len-1, keys at 0..k_len-1."""
    from posbench.positions import Positions

    return Positions(start, q_len), Positions(0, k_len)
