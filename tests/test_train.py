"""Training: schedule, determinism, the run folder, exact resume."""

import json
import subprocess
import sys
from dataclasses import replace

import pytest
import torch
from safetensors.torch import load_file

from posbench import load_run
from posbench import train as train_module
from posbench.data import tokens as data_module
from posbench.errors import Interrupted, PosbenchError
from posbench.model.gpt import GPT
from posbench.positions import METHODS
from posbench.train import TrainConfig, lr_at, train

from .helpers import assert_trained, capture_saved_models, logits_on, tiny_train


def losses(run_dir):
    return [r["loss"] for r in map(json.loads, (run_dir / "metrics.jsonl").read_text().splitlines()) if "loss" in r]


def test_lr_schedule_warmup_then_cosine():
    cfg = TrainConfig(lr=1.0, warmup=10, min_lr_ratio=0.1, steps=100)
    assert lr_at(0, 0.0, cfg) == pytest.approx(0.1)
    assert lr_at(9, 0.09, cfg) == pytest.approx(1.0)
    assert lr_at(10, 0.0, cfg) == pytest.approx(1.0)
    assert lr_at(50, 0.5, cfg) == pytest.approx(0.55)
    assert lr_at(100, 1.0, cfg) == pytest.approx(0.1)


@pytest.mark.parametrize("pos", sorted(METHODS))
def test_every_method_trains_and_load_run_gives_the_in_memory_models_logits(pos, corpus, tmp_path, monkeypatch):
    saved = capture_saved_models(monkeypatch)
    model_cfg, cfg = tiny_train(corpus, pos)
    result = train(model_cfg, cfg, out=tmp_path / pos, show_progress=False)
    run = result.run_dir
    for name in ("config.json", "model.safetensors", "metrics.jsonl", "summary.json", "checkpoint.pt"):
        assert (run / name).is_file(), name
    assert result.summary["steps"] == 6
    model, tokenizer, config = load_run(run)
    assert config.model.pos == pos and config.posbench_version
    trained = saved[-1]  # the model in memory when training wrote its last weights
    # plain safetensors loads the weights too, and they are the trained model's, value for value
    plain = load_file(str(run / "model.safetensors"))
    expected = trained.state_dict()
    assert plain.keys() == expected.keys()
    assert all(torch.equal(plain[name], expected[name]) for name in plain), "saved weights are the model's"
    assert_trained(plain, config)
    tokens = tokenizer.encode("the position")  # within the 16 rows of `learned`
    logits = logits_on(model, tokens)
    assert logits.shape == (1, len(tokens), tokenizer.vocab_size)
    assert torch.equal(logits, logits_on(trained, tokens))


def test_same_seed_same_losses_and_loss_goes_down(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, "rotary", steps=30, lr=1e-2, warmup=5)
    a = losses(train(model_cfg, cfg, out=tmp_path / "a", show_progress=False).run_dir)
    b = losses(train(model_cfg, cfg, out=tmp_path / "b", show_progress=False).run_dir)
    assert a == b
    assert sum(a[-5:]) / 5 < a[0] - 0.5
    cfg.seed = 1
    c = losses(train(model_cfg, cfg, out=tmp_path / "c", show_progress=False).run_dir)
    assert c != a


def test_ctrl_c_checkpoint_newer_than_the_periodic_one_resumes_bitwise_with_dropout(corpus, tmp_path, monkeypatch):
    """Dropout draws from torch's global RNG, so the resumed run matches the uninterrupted one only if
    the checkpoint restores that RNG too. Ctrl-C arrives at step 5, after the periodic checkpoint of
    step 4: resuming from step 5 proves the interrupt saved its own checkpoint."""
    model_cfg, cfg = tiny_train(corpus, "t5", steps=8, save_every=4)
    model_cfg = replace(model_cfg, dropout=0.1)
    whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False).run_dir

    from posbench.data import tokens as data_module

    original = data_module.BatchSampler.next_batch
    calls = {"n": 0}

    def interrupt_after_five(self):
        calls["n"] += 1
        if calls["n"] == 6:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(data_module.BatchSampler, "next_batch", interrupt_after_five)
    with pytest.raises(Interrupted) as info:
        train(model_cfg, cfg, out=tmp_path / "cut", show_progress=False)
    assert info.value.step == 5
    monkeypatch.setattr(data_module.BatchSampler, "next_batch", original)
    saved = capture_saved_models(monkeypatch)
    resumed = train(model_cfg, cfg, out=tmp_path / "cut", show_progress=False)
    assert resumed.resumed_from == 5, "resumed from the Ctrl-C checkpoint, not the periodic one of step 4"
    assert losses(whole) == losses(resumed.run_dir)
    a, b = load_file(str(whole / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    (whole_model, tokenizer, config), (resumed_model, _, _) = load_run(whole), load_run(resumed.run_dir)
    assert config.model.dropout == 0.1
    assert_trained(b, config)
    tokens = tokenizer.encode("heads attend far or near")
    assert torch.equal(logits_on(resumed_model, tokens), logits_on(whole_model, tokens))
    assert torch.equal(logits_on(resumed_model, tokens), logits_on(saved[-1], tokens))


def test_finished_run_is_reused_and_a_different_config_refused(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus)
    train(model_cfg, cfg, out=tmp_path / "r", show_progress=False)
    again = train(model_cfg, cfg, out=tmp_path / "r", show_progress=False)
    assert again.already_finished
    cfg.lr = 0.5
    with pytest.raises(PosbenchError, match="different config.*--overwrite"):
        train(model_cfg, cfg, out=tmp_path / "r", show_progress=False)
    assert not train(model_cfg, cfg, out=tmp_path / "r", overwrite=True, show_progress=False).already_finished


def test_non_finite_loss_stops_with_the_step(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, lr=1e30, steps=50, save_every=1000, eval_every=1000)
    with pytest.raises(PosbenchError, match=r"loss became .* at step \d+"):
        train(model_cfg, cfg, out=tmp_path / "nan", show_progress=False)


def test_embed_norm_flag_reaches_config_json_and_the_model(corpus, tmp_path, monkeypatch, capsys):
    import sys

    from posbench import cli

    out = tmp_path / "run"
    monkeypatch.setattr(sys, "argv", [
        "posbench", "train", "--pos", "alibi", "--embed-norm", "--data", corpus, "--out", str(out), "--layers", "1",
        "--heads", "2", "--dim", "16", "--tokenizer", "bytes", "--seq-len", "16", "--batch-size", "2", "--steps", "2",
        "--device", "cpu"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code in (0, None)
    assert "alibi+ln run" in capsys.readouterr().out
    assert json.loads((out / "config.json").read_text())["model"]["embed_norm"] is True
    model, _, _ = load_run(out)
    assert model.config.embed_norm and isinstance(model.ln_e, torch.nn.LayerNorm)
    assert "ln_e.weight" in load_file(str(out / "model.safetensors"))


MAPPED_WHILE_ALIVE = """
import ctypes, sys, torch
from posbench.common import keep_freed_memory
if sys.argv[1] == "keep":
    assert keep_freed_memory()
class MallInfo2(ctypes.Structure):  # glibc's struct mallinfo2: ten size_t counters
    _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                     "fsmblks", "uordblks", "fordblks", "keepcost")]
mallinfo2 = ctypes.CDLL(None).mallinfo2
mallinfo2.restype = MallInfo2
x = torch.ones(16 * 2**20)  # 64 MiB of float32
print(mallinfo2().hblkhd)  # bytes in blocks that have a mapping of their own
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
def test_freed_memory_is_kept_in_the_heap_for_the_next_step():
    """A training step's large buffers come from the heap once keep_freed_memory ran (freed, they stay
    for the next step), not from mappings of their own (by default, over glibc's 32 MiB threshold,
    each is mapped afresh and unmapped on free: its pages fault in again every step)."""
    mapped = {}
    for mode in ("default", "keep"):
        done = subprocess.run([sys.executable, "-c", MAPPED_WHILE_ALIVE, mode], capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        mapped[mode] = int(done.stdout.split()[-1])
    assert mapped["default"] >= 64 * 2**20 > mapped["keep"], mapped


def test_cpu_training_keeps_freed_memory(corpus, tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(train_module, "keep_freed_memory", lambda: calls.append(1))
    train(*tiny_train(corpus, "none", steps=1), out=tmp_path / "run", show_progress=False)
    assert calls == [1]


def test_compiled_training_matches_eager(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=3, eval_every=3, save_every=3)
    eager = train(model_cfg, cfg, out=tmp_path / "eager", show_progress=False).summary
    compiled = train(model_cfg, replace(cfg, compile=True), out=tmp_path / "compiled", show_progress=False).summary
    assert compiled["train_loss"] == pytest.approx(eager["train_loss"], abs=1e-4)
    assert compiled["val_loss"] == pytest.approx(eager["val_loss"], abs=1e-4)


def test_a_run_written_before_the_training_length_was_renamed_loads_and_resumes(corpus, tmp_path):
    """Run folders from before `train_len` call it max_len (model) and seq_len (train): they load
    with the same training length, evaluate, and count as the same run for resume."""
    model_cfg, cfg = tiny_train(corpus, "learned", steps=4, save_every=2)
    run = train(model_cfg, cfg, out=tmp_path / "old", show_progress=False).run_dir
    config = json.loads((run / "config.json").read_text())
    config["model"]["max_len"] = config["model"].pop("train_len")
    config["train"]["seq_len"] = config["train"].pop("train_len")
    (run / "config.json").write_text(json.dumps(config))
    model, _, loaded = load_run(run)
    assert model.config.train_len == 16 and model.pos.max_positions == 16
    assert loaded.train.train_len == 16
    (run / "summary.json").unlink()  # unfinished: the same config resumes instead of refusing
    result = train(model_cfg, cfg, out=run, show_progress=False)
    assert result.resumed_from == 4 and result.summary["steps"] == 4


# ----------------------------------------------------------------------------- randomized positions


def interrupted_then_resumed(model_cfg, cfg, run_dir, monkeypatch, at_call: int):
    """Train into run_dir, Ctrl-C when the sampler is asked for batch `at_call`, then resume."""
    original = data_module.BatchSampler.next_batch
    calls = {"n": 0}

    def interrupt(self):
        calls["n"] += 1
        if calls["n"] == at_call:
            raise KeyboardInterrupt
        return original(self)

    with monkeypatch.context() as m:
        m.setattr(data_module.BatchSampler, "next_batch", interrupt)
        with pytest.raises(Interrupted):
            train(model_cfg, cfg, out=run_dir, show_progress=False)
    return train(model_cfg, cfg, out=run_dir, show_progress=False)


@pytest.mark.parametrize("pos", ["alibi", "rotary"])
def test_randomized_positions_train_record_and_resume_bitwise(pos, corpus, tmp_path, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, pos, steps=8, save_every=4, random_positions=64)
    seen = []
    forward = GPT.forward

    def spy(self, idx, start=0, cache=None, positions=None):
        if self.training:
            seen.append(positions)
        return forward(self, idx, start, cache, positions)

    with monkeypatch.context() as m:
        m.setattr(GPT, "forward", spy)
        whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False)
    assert len(seen) == 8 and all(p is not None and p.shape == (16,) and p.max() < 64 for p in seen)
    assert not any(torch.equal(p, torch.arange(16)) for p in seen)
    config = json.loads((whole.run_dir / "config.json").read_text())
    assert config["train"]["random_positions"] == 64
    plain = train(model_cfg, replace(cfg, random_positions=None), out=tmp_path / "plain", show_progress=False)
    assert losses(plain.run_dir) != losses(whole.run_dir)
    assert whole.summary["val_loss"] != plain.summary["val_loss"]
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=6)
    assert resumed.resumed_from == 5
    assert losses(resumed.run_dir) == losses(whole.run_dir)
    a, b = load_file(str(whole.run_dir / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert resumed.summary["val_loss"] == whole.summary["val_loss"]


def test_randomized_positions_refuse_a_position_table_and_too_small_an_M(corpus, tmp_path):
    model_cfg, cfg = tiny_train(corpus, "learned", random_positions=64)
    with pytest.raises(PosbenchError, match="'learned' encodes only 16"):
        train(model_cfg, cfg, out=tmp_path / "learned", show_progress=False)
    assert not (tmp_path / "learned").exists(), "refused before anything is written"
    model_cfg, cfg = tiny_train(corpus, "alibi", random_positions=8)
    with pytest.raises(PosbenchError, match="below --train-len 16"):
        train(model_cfg, cfg, out=tmp_path / "small", show_progress=False)


def test_gradients_are_clipped_to_grad_clip_every_step(corpus, tmp_path, monkeypatch):
    """AdamW hides a gradient's scale at its first step, so clipping shows in the calls: every
    optimizer step first clips the model's gradients to --grad-clip."""
    calls, real = [], torch.nn.utils.clip_grad_norm_

    def spy(parameters, max_norm, *args, **kwargs):
        calls.append(max_norm)
        return real(parameters, max_norm, *args, **kwargs)

    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", spy)
    model_cfg, cfg = tiny_train(corpus, "alibi", steps=5, grad_clip=0.25)
    train(model_cfg, cfg, out=tmp_path / "run", show_progress=False)
    assert calls == [0.25] * 5
