"""What a run is: RunConfig, a run folder's config.json read once — ModelConfig (the model, its
"model"), TrainConfig (the training run, its "train"), the corpus and the tokenizer it was trained on.

A config.json written by an older posbench lacks fields added since, or names them differently:
RunConfig.from_json reads it as the run that was actually trained (renames in RENAMES, a missing
setting as its LEGACY value or its default), here and nowhere else."""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, fields

from .. import __version__
from ..common import DEVICE, PRECISIONS
from ..errors import PosbenchError
from ..positions import METHODS, TEMPERATURES

# What a legacy config.json (written before the methods followed their reference code) meant by the
# fields it lacks: the variant those runs were trained with, so they keep loading and evaluating
# exactly as they were trained.
# New runs get the dataclass defaults below, the reference implementations (docs/methods.md).
FORMAT = 1  # config.json's "format": bump when the run folder layout changes incompatibly
# what runs written before the training length had one name called it, per section
RENAMES = {"model": {"max_len": "train_len"}, "train": {"seq_len": "train_len"}}
# settings that do not change what a run computes: a run may be resumed with others
NOT_IDENTITY = {"device", "compile", "save_every", "log_every"}
LEGACY = {"embed_norm": False, "sinusoid_ratio": 1.0, "t5_max_distance": 128, "fire_init_L": None,
          "softplus_params": True}


@dataclass
class ModelConfig:
    vocab_size: int = 4096
    n_layer: int = 4
    n_head: int = 8
    d_model: int = 192
    train_len: int = 128  # the training length L; also the table size of `learned`
    pos: str = "alibi"  # the method of "Train Short, Test Long"
    tie_embeddings: bool = True
    dropout: float = 0.0
    mlp_ratio: int = 4
    # a LayerNorm right after the embedding (BigScience found it hurts); None: as the method's
    # reference code (on for scaled-sinusoidal, as cramming; off for the others)
    embed_norm: bool | None = None
    # sinusoidal: sinusoid RMS : token std at init (Vaswani / fairseq: tokens std 1, sinusoid 1/sqrt 2)
    sinusoid_ratio: float = 0.5**0.5
    # t5: distances >= this share the last bucket; None: min(128, train_len), at least 17
    t5_max_distance: int | None = None
    # fire: the fixed init_L of its threshold |multiplier| * init_L (FIRE's code: 512); None: train_len
    fire_init_L: float | None = 512.0
    # fire's c, kerple's r1, r2 as softplus(raw) (legacy runs), not the reference's raw parameters
    softplus_params: bool = False
    # a logit temperature on top of the method (TEMPERATURES: "ssmax", "llama4"), or None; written
    # as a composition, --pos rotary+ssmax
    temperature: str | None = None
    # hybrids' local span (sliding window, chunk) and Llama 4's temperature floor; None: train_len // 2
    window: int | None = None
    # hybrids: NoPE in every nope_every-th layer (Llama 4, Command A: 4)
    nope_every: int = 4
    # p-rope: the fraction of rotary frequencies kept, the fastest (Barbero et al. 2025)
    rope_fraction: float = 0.75
    # drope: the fraction of training after which RoPE is dropped (the rest recalibrates as NoPE)
    drop_at: float = 0.9

    def __post_init__(self) -> None:
        if "+" in self.pos and self.temperature is None:  # a composition as written: rotary+ssmax
            self.pos, _, self.temperature = self.pos.partition("+")
        if self.temperature is not None and self.temperature not in TEMPERATURES:
            raise PosbenchError(f"unknown temperature '{self.temperature}' in --pos {self.pos}+{self.temperature}; "
                                f"choose from {', '.join(TEMPERATURES)}")
        if self.pos not in METHODS:
            close = difflib.get_close_matches(self.pos, METHODS, n=1)
            hint = f"did you mean '{close[0]}'? " if close else ""
            raise PosbenchError(f"unknown position method '{self.pos}'; {hint}choose from {', '.join(METHODS)}")
        if self.d_model % self.n_head:
            raise PosbenchError(f"--dim {self.d_model} is not divisible by --heads {self.n_head}")
        if self.embed_norm is None:
            self.embed_norm = METHODS[self.pos].reference_embed_norm
        if not self.sinusoid_ratio > 0 or (self.fire_init_L is not None and not self.fire_init_L > 0):
            raise PosbenchError("sinusoid_ratio and fire_init_L must be positive")
        if self.t5_max_distance is not None and self.t5_max_distance <= 16:
            raise PosbenchError("t5_max_distance must exceed 16, the exact buckets' range")
        if (self.window is not None and self.window < 1) or self.nope_every < 1:
            raise PosbenchError("window and nope_every must be positive")
        if not 0 < self.rope_fraction <= 1 or not 0 <= self.drop_at <= 1:
            raise PosbenchError("rope_fraction must lie in (0, 1], drop_at in [0, 1]")

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        """A config.json's "model" (as RunConfig.from_json renamed it); a field it lacks that its
        method reads gets its LEGACY value, a field this version does not know is left out."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in values.items() if k in known}
        method = METHODS.get(values.get("pos", cls.pos))
        reads = ("embed_norm", *method.settings) if method is not None else ()
        legacy = {k: v for k, v in LEGACY.items() if k in reads and k not in values}
        return cls(**values, **legacy)

    def to_dict(self) -> dict:
        return asdict(self)

    def label(self) -> str:
        """The method as tables show it: pos, then +tag per setting off its default, e.g. "alibi+ln",
        "scaled-sinusoidal+noln" (without its reference LayerNorm), "t5+t5_max_distance=128", "rotary+ssmax"
        (with a temperature)."""
        method = METHODS[self.pos]
        tags = []
        if self.embed_norm != method.reference_embed_norm:
            tags.append("ln" if self.embed_norm else "noln")
        defaults = {f.name: f.default for f in fields(self)}
        for name in method.settings:
            value = getattr(self, name)
            if value != defaults[name]:
                tags.append(name if value is True else f"{name}={'L' if value is None else format(value, 'g')}")
        return "+".join((self.pos, *([self.temperature] if self.temperature else []), *tags))


@dataclass
class TrainConfig:
    data: str = "pydocs"
    tokenizer: str = "bpe"
    vocab_size: int = 4096
    train_len: int = 128
    batch_size: int = 16  # global: split across ranks under torchrun
    lr: float = 3e-3
    min_lr_ratio: float = 0.1
    warmup: int = 50
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    steps: int = 600
    minutes: float | None = None  # train for a wall-clock budget instead of a step count
    eval_every: int = 200
    eval_tokens: int = 16384
    log_every: int = 10
    seed: int = 0  # model init and the order of training batches
    # the tokenizer's seed (None: seed): compare's seeds share one tokenizer, so all score the same windows
    tokenizer_seed: int | None = None
    device: str = DEVICE
    compile: bool = False
    save_every: int = 200
    # randomized positions (Ruoss et al. 2023): each batch's tokens sit at a sorted random subset of
    # [0, M) instead of 0..n-1, here and when the run is evaluated; None: off (and in older configs)
    random_positions: int | None = None
    # training precision on the CPU: fp32, bf16 (autocast; fp32 weights, optimizer and loss) or auto
    # (bf16 where the CPU has bf16 instructions), recorded as chosen; CUDA trains in bf16 autocast
    # whatever it says. A config written before the option reads fp32, as it trained on the CPU.
    precision: str = "fp32"
    # PoSE, positional skip-wise training (Zhu et al. 2024): each batch's ids in two chunks, the second
    # shifted so the ids reach up to M - 1 (positions/ids.py, pose_positions); evaluated at 0..n-1.
    # None: off (and in older configs)
    pose: int | None = None

    @property
    def tokenizer_seed_or_seed(self) -> int:
        """The seed the tokenizer is trained with: tokenizer_seed when set (compare's seeds share one
        tokenizer), else the run's seed, as before the field existed."""
        return self.seed if self.tokenizer_seed is None else self.tokenizer_seed

    @classmethod
    def from_dict(cls, values: dict) -> TrainConfig:
        """From config.json's "train" (as RunConfig.from_json renamed it); a field it lacks reads as
        its default, a field this version does not know is left out."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in values.items() if k in known})

    def validate(self) -> None:
        for name in ("train_len", "batch_size", "steps", "vocab_size", "eval_every", "save_every", "log_every"):
            if getattr(self, name) <= 0:
                raise PosbenchError(f"--{name.replace('_', '-')} must be positive, got {getattr(self, name)}")
        if self.lr <= 0:
            raise PosbenchError(f"--lr must be positive, got {self.lr}")
        if self.minutes is not None and self.minutes <= 0:
            raise PosbenchError(f"--minutes must be positive, got {self.minutes}")
        if self.random_positions is not None and self.pose is not None:
            raise PosbenchError("--random-positions and --pose are two ways to draw training positions; choose one")
        if self.pose is not None and self.pose < self.train_len:
            raise PosbenchError(f"--pose {self.pose} is below --train-len {self.train_len}: PoSE spreads a window's "
                                "ids over [0, M), so M must be at least the window")
        if self.random_positions is not None and self.random_positions < self.train_len:
            raise PosbenchError(f"--random-positions {self.random_positions} is below --train-len {self.train_len}: "
                                f"a window needs that many distinct positions from [0, M)")
        if self.precision not in PRECISIONS:
            raise PosbenchError(f"--precision must be one of {', '.join(PRECISIONS)}, got '{self.precision}'")
        if self.tokenizer not in ("bpe", "bytes"):
            raise PosbenchError(f"--tokenizer must be 'bpe' or 'bytes', got '{self.tokenizer}'")


@dataclass
class RunConfig:
    """A run folder's config.json as this version reads it: everything needed to rebuild and
    describe a run. Built once per folder (runs.folder.read_config), then passed around whole."""

    model: ModelConfig
    train: TrainConfig
    data: dict  # what the run trained on: the corpus (name, sha256, sizes) or a task's batch source
    tokenizer: dict  # the tokenizer's description; {"kind": "task"} for a task run (no tokenizer)
    format: int = FORMAT
    posbench_version: str = __version__  # the posbench that wrote it

    @classmethod
    def from_json(cls, raw: dict) -> RunConfig:
        """config.json's dict, written by this posbench or an older one."""
        sections = {name: {RENAMES.get(name, {}).get(k, k): v for k, v in (raw.get(name) or {}).items()}
                    for name in ("model", "train")}
        return cls(ModelConfig.from_dict(sections["model"]), TrainConfig.from_dict(sections["train"]),
                   raw.get("data") or {}, raw.get("tokenizer") or {}, raw.get("format", 0),
                   raw.get("posbench_version", "?"))

    def to_json(self) -> dict:
        return {"format": self.format, "posbench_version": self.posbench_version, "model": self.model.to_dict(),
                "train": asdict(self.train), "data": self.data, "tokenizer": self.tokenizer}

    @property
    def label(self) -> str:
        """The method as tables show it (ModelConfig.label): "alibi", "alibi+ln", "rotary+ssmax"."""
        return self.model.label()

    @property
    def is_task_run(self) -> bool:
        """A `posbench tasks` run: its ids are the task's vocabulary, it has no tokenizer."""
        return self.tokenizer.get("kind") == "task"

    def identity(self) -> dict:
        """What makes two runs the same run: model, data and every training setting that changes what
        is computed (not the device, compile, or how often it saves and logs). Settings at the value
        every run had before they existed (tokenizer_seed unset or equal to the seed, random_positions
        and pose off, precision fp32) are left out, so older runs keep their identity."""
        train = {k: v for k, v in asdict(self.train).items() if k not in NOT_IDENTITY}
        if train["tokenizer_seed"] in (None, train["seed"]):
            del train["tokenizer_seed"]
        for option in ("random_positions", "pose"):  # off, as in every run written before the option
            if train[option] is None:
                del train[option]
        if train["precision"] == "fp32":
            del train["precision"]
        return {"model": self.model.to_dict(), "train": train, "data": self.data}
