"""Named experiment sizes: the model, the training run and the evaluation lengths that go together."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import PosbenchError
from ..runs.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Preset:
    description: str
    model: dict = field(default_factory=dict)  # ModelConfig fields
    train: dict = field(default_factory=dict)  # TrainConfig fields
    max_len: int = 4096  # longest evaluation length
    eval_tokens: int = 32768  # predictions scored at every length

    def configs(self, pos: str, **train_overrides) -> tuple[ModelConfig, TrainConfig]:
        overrides = {k: v for k, v in train_overrides.items() if v is not None}
        return ModelConfig(**self.model, pos=pos), replace(TrainConfig(**self.train), **overrides)


PRESETS: dict[str, Preset] = {
    # the README demo: 7 methods, train + evaluate, <= 15 minutes on 2 CPU cores
    "quick": Preset(
        "3 layers, d=128, 4 heads, BPE 1024, L=64, 600 steps of 32 windows; evaluated up to 16L",
        model=dict(n_layer=3, n_head=4, d_model=128),
        train=dict(train_len=64, batch_size=32, steps=600, warmup=50, lr=3e-3, vocab_size=1024, eval_every=300,
                   save_every=300),
        max_len=1024, eval_tokens=32768,  # 32 blocks of 1024 (stats.py: t intervals over blocks)
    ),
    # a longer CPU run (about 5 minutes per method on 2 cores) or a minute on a GPU
    "small": Preset(
        "4 layers, d=192, 8 heads, L=128, 1500 steps of 16 windows; evaluated up to 16L",
        model=dict(n_layer=4, n_head=8, d_model=192),
        train=dict(train_len=128, batch_size=16, steps=1500, warmup=100, lr=2e-3, eval_every=500, save_every=500),
        max_len=2048, eval_tokens=65536,  # 32 blocks of 2048 where the split holds them
    ),
    # the shape of the ALiBi paper's WikiText-103 model (Press et al. 2022, Sec. 4): 16 layers,
    # d=1024, 8 heads, trained at L=512 — for GPUs: torchrun ... --preset paper --data wikitext-103
    "paper": Preset(
        "16 layers, d=1024, 8 heads, L=512, 50k steps of 32 windows (GPU); evaluated up to 6L",
        model=dict(n_layer=16, n_head=8, d_model=1024),
        train=dict(train_len=512, batch_size=32, steps=50_000, warmup=2000, lr=3e-4, vocab_size=16384,
                   eval_every=2000, save_every=1000),
        max_len=3072, eval_tokens=262_144,
    ),
}


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise PosbenchError(f"unknown preset '{name}'; choose from {', '.join(PRESETS)}")
    return PRESETS[name]
