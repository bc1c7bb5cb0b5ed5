"""Named experiment sizes: the model, the training run and how the runs are scored, together.

One Preset type with a kind per experiment: CorpusPreset (`compare`: language models on a corpus,
scored by length) and TaskPreset (`tasks`: algorithmic tasks, scored by exact match at multiples of
L). PRESETS[experiment][name]; get_preset is the one lookup."""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from ..errors import PosbenchError
from ..runs.config import ModelConfig, TrainConfig


@dataclass(frozen=True)
class Preset:
    description: str
    model: dict = field(default_factory=dict)  # ModelConfig fields
    train: dict = field(default_factory=dict)  # TrainConfig fields

    def configs(self, pos: str, model: dict | None = None, **train_overrides) -> tuple[ModelConfig, TrainConfig]:
        """The configs of one run of method `pos`: the preset's, with `model` fields and the train
        overrides that are not None on top."""
        overrides = {k: v for k, v in train_overrides.items() if v is not None}
        model_config = ModelConfig(**{**self.model, **(model or {}), "pos": pos})
        return model_config, replace(TrainConfig(**self.train), **overrides)


@dataclass(frozen=True)
class CorpusPreset(Preset):
    max_len: int = 4096  # longest evaluation length
    eval_tokens: int = 32768  # predictions scored at every length


@dataclass(frozen=True)
class TaskPreset(Preset):
    train_max_len: int = 32  # L: the longest training instance, in tokens (answer included)
    factors: tuple[float, ...] = (1, 2, 3, 4)  # evaluated at these multiples of L
    instances: int = 200  # fresh instances scored per length
    depths: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)  # passkey: where the key is, per heatmap cell
    depth_instances: int = 50  # per (length, depth) cell

    def lengths(self) -> list[int]:
        return [int(round(self.train_max_len * f)) for f in self.factors]


CORPUS_PRESETS: dict[str, CorpusPreset] = {
    # the README demo: 7 methods, train + evaluate, <= 15 minutes on 2 CPU cores
    "quick": CorpusPreset(
        "3 layers, d=128, 4 heads, BPE 1024, L=64, 600 steps of 32 windows; evaluated up to 16L",
        model=dict(n_layer=3, n_head=4, d_model=128),
        train=dict(train_len=64, batch_size=32, steps=600, warmup=50, lr=3e-3, vocab_size=1024, eval_every=300,
                   save_every=300),
        max_len=1024, eval_tokens=32768,  # 32 blocks of 1024 (stats.py: t intervals over blocks)
    ),
    # a longer CPU run (about 5 minutes per method on 2 cores) or a minute on a GPU
    "small": CorpusPreset(
        "4 layers, d=192, 8 heads, L=128, 1500 steps of 16 windows; evaluated up to 16L",
        model=dict(n_layer=4, n_head=8, d_model=192),
        train=dict(train_len=128, batch_size=16, steps=1500, warmup=100, lr=2e-3, eval_every=500, save_every=500),
        max_len=2048, eval_tokens=65536,  # 32 blocks of 2048 where the split holds them
    ),
    # the shape of the ALiBi paper's WikiText-103 model (Press et al. 2022, Sec. 4): 16 layers,
    # d=1024, 8 heads, trained at L=512 — for GPUs: torchrun ... --preset paper --data wikitext-103
    "paper": CorpusPreset(
        "16 layers, d=1024, 8 heads, L=512, 50k steps of 32 windows (GPU); evaluated up to 6L",
        model=dict(n_layer=16, n_head=8, d_model=1024),
        train=dict(train_len=512, batch_size=32, steps=50_000, warmup=2000, lr=3e-4, vocab_size=16384,
                   eval_every=2000, save_every=1000),
        max_len=3072, eval_tokens=262_144,
    ),
}


TASK_PRESETS: dict[str, TaskPreset] = {
    # sized for a laptop (benchmarks/tasks_speed.py): one (task, method) run is 2,000 steps, about
    # 50-90 s on one busy CPU thread; instances of <= 24 tokens (copy: strings of <= 11) reach >= 0.95
    # exact match for most methods, shorter training (1,500 steps at L = 32) left copy and recall short
    "quick": TaskPreset(
        "2 layers, d=64, 4 heads, instances of <= 24 tokens, 2000 steps of 32; scored at 1-4x",
        model=dict(n_layer=2, n_head=4, d_model=64),
        train=dict(batch_size=32, steps=2000, warmup=100, lr=3e-3, min_lr_ratio=0.1, weight_decay=0.1),
        train_max_len=24,
    ),
    # the retrieval suite's needles (several keys, values or queries) at a size where they may be
    # learned, scored out to 8L as RULER's sweeps go far past the training context: by parameters and
    # steps some 20x the quick preset's compute per run (docs/tasks.md: not yet timed or measured)
    "small": TaskPreset(
        "4 layers, d=128, 4 heads, instances of <= 32 tokens, 4000 steps of 32; scored at 1, 2, 4, 8x",
        model=dict(n_layer=4, n_head=4, d_model=128),
        train=dict(batch_size=32, steps=4000, warmup=200, lr=2e-3, min_lr_ratio=0.1, weight_decay=0.1),
        train_max_len=32, factors=(1, 2, 4, 8),
    ),
}

PRESETS: dict[str, dict[str, Preset]] = {"compare": CORPUS_PRESETS, "tasks": TASK_PRESETS}


def get_preset(experiment: str, name: str) -> Preset:
    """PRESETS[experiment][name], or an error naming the presets there are."""
    presets = PRESETS[experiment]
    if name not in presets:
        raise PosbenchError(f"unknown preset '{name}' for {experiment}; choose from {', '.join(presets)}")
    return presets[name]
