"""--precision: bf16 autocast on the CPU with fp32 weights, recorded as chosen, exact resume within a
precision, and old runs (no precision in config.json) still the same runs."""

import json

import pytest
import torch
from safetensors.torch import load_file

from posbench import common
from posbench.errors import PosbenchError
from posbench.runs.config import RunConfig, TrainConfig
from posbench.train import train

from .helpers import tiny_train
from .test_train import interrupted_then_resumed, losses


def identity(raw: dict) -> dict:
    return RunConfig.from_json(raw).identity()


def test_bf16_trains_under_autocast_with_fp32_weights_and_resumes_exactly(corpus, tmp_path, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, "rotary", steps=6, save_every=3, precision="bf16")
    seen = []
    linear = torch.nn.Linear.forward
    monkeypatch.setattr(torch.nn.Linear, "forward", lambda self, x: seen.append(torch.is_autocast_enabled("cpu"))
                        or linear(self, x))
    whole = train(model_cfg, cfg, out=tmp_path / "bf16", show_progress=False)
    assert any(seen), "the forward ran under CPU autocast"
    assert json.loads((whole.run_dir / "config.json").read_text())["train"]["precision"] == "bf16"
    weights = load_file(str(whole.run_dir / "model.safetensors"))
    assert all(t.dtype == torch.float32 for t in weights.values())
    fp32 = train(model_cfg, TrainConfig(**{**cfg.__dict__, "precision": "fp32"}), out=tmp_path / "fp32",
                 show_progress=False)
    assert losses(fp32.run_dir) != losses(whole.run_dir)
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=5)
    assert losses(resumed.run_dir) == losses(whole.run_dir)


@pytest.mark.parametrize("fast, chosen", [(True, "bf16"), (False, "fp32")])
def test_auto_is_recorded_as_what_it_chose(fast, chosen, corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(common, "cpu_has_fast_bf16", lambda: fast)
    model_cfg, cfg = tiny_train(corpus, "none", steps=2, precision="auto")
    run = train(model_cfg, cfg, out=tmp_path / "run", show_progress=False).run_dir
    assert json.loads((run / "config.json").read_text())["train"]["precision"] == chosen


def test_a_config_without_precision_is_the_same_run_as_fp32_and_bf16_is_another():
    old = {"model": {"pos": "alibi"}, "data": {}, "train": {"seed": 0}}
    assert identity(old) == identity({**old, "train": {"seed": 0, "precision": "fp32"}})
    assert identity(old) != identity({**old, "train": {"seed": 0, "precision": "bf16"}})


def test_an_unknown_precision_is_refused():
    with pytest.raises(PosbenchError, match="--precision must be one of fp32, bf16, auto"):
        TrainConfig(precision="fp16").validate()
