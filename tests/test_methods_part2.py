"""Sandwich, Resonance RoPE and PoSE against their reference code. Each expectation is transcribed from
the reference named beside it and computed here by hand, never with posbench's function under test."""

import json
import math
import random

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from posbench.errors import PosbenchError
from posbench.evaluation.extrapolate import EvalSettings, evaluate_run
from posbench.model.gpt import GPT
from posbench.positions import PoseDraw, Positions, pose_positions
from posbench.positions.rope_scaling import apply_rope_scaling, yarn_inv_freq
from posbench.runs.config import RunConfig, TrainConfig
from posbench.tasks.data import TaskSampler
from posbench.tasks.run import task_run_label
from posbench.train import train

from .helpers import tiny_model, tiny_train
from .test_train import interrupted_then_resumed, losses


@pytest.mark.parametrize("n_head, head_dim", [(4, 8), (3, 16)])
def test_sandwich_bias_equals_nemo(n_head, head_dim):
    """NVIDIA NeMo `position_embedding/sandwich_relative_position_embedding.py` with
    `alibi_relative_position_embedding.py`'s build_relative_position(full=True): relative = |i - j|;
    inv_freq = 1 / 10000 ** (2 * arange(1, hidden/2 + 1) / hidden); bias = sum(cos(relative * inv_freq));
    scaled = (bias - hidden / 2) / (arange(1, H + 1) * 8 / H), hidden = the head dim."""
    T = 40
    relative = (torch.arange(T)[:, None] - torch.arange(T)[None, :]).abs()  # (T, T)
    inv_freq = 1.0 / (10000 ** (2 * torch.arange(1, head_dim / 2 + 1) / head_dim))
    bias = (relative[:, :, None].repeat(1, 1, len(inv_freq)) * inv_freq).cos().sum(dim=2)
    scales = torch.arange(1, n_head + 1)[:, None, None] * 8 / n_head
    expected = (bias.repeat(n_head, 1, 1) - head_dim / 2) / scales  # (H, T, T)
    method = tiny_model("sandwich", n_head=n_head, d_model=n_head * head_dim).pos
    got = method.score_bias(Positions(0, T), Positions(0, T))
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    torch.testing.assert_close(got[:, causal], expected[:, causal], rtol=1e-5, atol=1e-5)
    # and a query chunk at explicit ids reads the same values (distance_bias over a matrix of distances)
    ids = torch.tensor([3, 7, 8, 20])
    sparse = method.score_bias(Positions.explicit(ids), Positions.explicit(ids))
    torch.testing.assert_close(sparse, expected[:, ids][:, :, ids], rtol=1e-5, atol=1e-5)


def resonance_reference_angles(dim: int, seq_len: int, base: float = 10000.0) -> torch.Tensor:
    """sheryc/resonance_rope `rotary_resonance.py`, ResonanceRotaryEmbedding: inv_freq = 1 / base **
    (arange(0, dim, 2) / dim); r_wavelengths = round(2 pi / inv_freq); r_inv_freq = 2 pi / r_wavelengths;
    compute_freqs: per pair i, arange(r_wavelengths[i]) * r_inv_freq[i] repeated to seq_len when
    seq_len >= the wavelength, else arange(seq_len) * r_inv_freq[i]. (seq_len, dim/2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2).float() / dim))
    r_wavelengths = torch.round(2 * math.pi / inv_freq)
    r_inv_freq = 2 * math.pi / r_wavelengths
    columns = []
    for i in range(dim // 2):
        wavelength = int(r_wavelengths[i].item())
        if seq_len >= wavelength:
            one_turn = torch.arange(wavelength, dtype=torch.float32) * r_inv_freq[i]
            columns.append(one_turn.repeat(math.ceil(seq_len / wavelength))[:seq_len])
        else:
            columns.append(torch.arange(seq_len, dtype=torch.float32) * r_inv_freq[i])
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("head_dim, T", [(8, 300), (16, 2000)])
def test_resonance_rope_tables_equal_the_reference(head_dim, T):
    method = tiny_model("resonance", n_head=2, d_model=2 * head_dim).pos
    angles = resonance_reference_angles(head_dim, T)
    cos, sin = method.cos_sin(Positions(0, T), "cpu", torch.float32)  # (T, hd): both halves alike
    torch.testing.assert_close(cos[:, : head_dim // 2], angles.cos(), rtol=0, atol=2e-6)
    torch.testing.assert_close(sin[:, head_dim // 2 :], angles.sin(), rtol=0, atol=2e-6)


def test_resonance_pairs_repeat_their_trained_angles_exactly_past_l():
    """The method's claim (Sec. 4): a pair whose integer wavelength is at most L shows, at any later
    position, exactly an angle it showed within L."""
    method = tiny_model("resonance", n_head=2, d_model=32).pos
    inv_freq = method.default_inv_freq("cpu")
    wavelength = 2 * math.pi / inv_freq
    torch.testing.assert_close(wavelength, wavelength.round(), rtol=0, atol=1e-3)
    cos, _ = method.cos_sin(Positions(0, 5000), "cpu", torch.float32)
    for i in torch.nonzero(wavelength.round() <= 64).flatten().tolist():
        w = int(round(wavelength[i].item()))
        assert torch.equal(cos[4000 : 4000 + w, i], cos[4000 % w : 4000 % w + w, i]), i


def test_resonance_rope_scaling_rounds_the_scaled_wavelengths():
    """As the reference's ResonanceYaRNScaledRotaryEmbedding: YaRN's frequencies first (from RoFormer's,
    not the rounded ones), then each wavelength rounded (its beta_fast 2 differs from posbench's YaRN,
    HF's 32: the rounding is what is checked)."""
    model = tiny_model("resonance", n_head=2, d_model=32, train_len=32)
    apply_rope_scaling(model, "yarn", 4.0, 32)
    plain = 1.0 / (10000.0 ** (torch.arange(0, 16, 2).float() / 16))
    expected = 2 * math.pi / torch.round(2 * math.pi / yarn_inv_freq(plain, 4.0, 32, 10000.0))
    torch.testing.assert_close(model.pos.inv_freq("cpu", 128), expected)


# ----------------------------------------------------------------------------- PoSE


def pose_reference(length: int, scaled_max: int, rng: random.Random) -> list[int]:
    """dwzhu-pku/PoSE `src/train_pose.py`, train_preprocess_function_pose, its position ids (len_chunk =
    the window): lt1 = 0; rt1 = randint(1, (len_chunk + 1) // 2); lt = 0; rt = randint(lt, scaled_max -
    len_pos_ids); pos_ids[:rt1 - lt1] += lt; pos_ids[rt1 - lt1:] += rt. Python's randint is inclusive."""
    rt1 = rng.randint(1, (length + 1) // 2)
    rt = rng.randint(0, scaled_max - length)
    return list(range(rt1)) + [i + rt for i in range(rt1, length)]


def test_pose_ids_are_the_references_two_chunks_with_its_distribution():
    """Every draw is one of the reference's (first chunk at 0..r1-1, the rest shifted by a skip), and over
    many draws r1 and the skip are uniform on the reference's ranges (chi-square, 99.9%: 7 df 24.3, 24 df
    51.2), in the same proportions as the reference's own draws."""
    length, top = 16, 41  # r1 in 1..8, skip in 0..25
    gen = torch.Generator().manual_seed(0)
    firsts, skips = np.zeros(8), np.zeros(26)
    reference_skips = np.zeros(26)
    rng = random.Random(0)
    for _ in range(5200):
        ids = pose_positions(length, top, gen).tolist()
        jumps = [b - a for a, b in zip(ids, ids[1:], strict=False) if b - a != 1]
        first = next((k + 1 for k, (a, b) in enumerate(zip(ids, ids[1:], strict=False)) if b - a != 1), None)
        skip = jumps[0] - 1 if jumps else 0
        assert ids[0] == 0 and len(jumps) <= 1 and max(ids) < top
        if first is None:  # a skip of 0: the chunks meet; r1 is not visible, only the skip
            skips[0] += 1
            continue
        assert ids == list(range(first)) + [i + skip for i in range(first, length)]
        firsts[first - 1] += 1
        skips[skip] += 1
        reference_skips[pose_reference(length, top, rng)[-1] - (length - 1)] += 1
    assert chi_square_uniform(firsts) < 24.3
    assert chi_square_uniform(skips[1:]) < 51.2 and chi_square_uniform(reference_skips[1:]) < 51.2


def chi_square_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_pose_draws_are_seeded_resumable_and_fill_a_window_of_m_exactly():
    """Same seed, same ids; a restored state continues the stream; the reference's bounds at the edges
    (len_chunk = M leaves a skip of 0 only; a window longer than M cannot be placed)."""
    a, b, other = PoseDraw(64, 7), PoseDraw(64, 7), PoseDraw(64, 8)
    draws = [a(16) for _ in range(6)]
    assert all(torch.equal(x, b(16)) for x in draws)
    assert any(not torch.equal(x, other(16)) for x in draws)
    for ids in draws:  # increasing, from 0, below M, one jump at most (two contiguous chunks)
        steps = ids.diff()
        assert ids[0] == 0 and ids.max() < 64 and (steps >= 1).all() and int((steps > 1).sum()) <= 1
    saved = a.state_dict()
    expected = [a(16) for _ in range(3)]
    restored = PoseDraw(64, 0)
    restored.load_state_dict(saved)
    assert all(torch.equal(x, restored(16)) for x in expected)
    assert torch.equal(pose_positions(16, 16, torch.Generator().manual_seed(0)), torch.arange(16))
    with pytest.raises(PosbenchError, match="larger --pose"):
        pose_positions(17, 16, torch.Generator())
    with pytest.raises(PosbenchError, match="--pose must be positive"):
        PoseDraw(0, 0)


def test_pose_and_randomized_positions_are_one_choice_and_pose_needs_room(corpus, tmp_path):
    with pytest.raises(PosbenchError, match="choose one"):
        TrainConfig(random_positions=64, pose=64, train_len=16).validate()
    with pytest.raises(PosbenchError, match="--pose 8 is below --train-len 16"):
        TrainConfig(pose=8, train_len=16).validate()
    model_cfg, cfg = tiny_train(corpus, "learned", pose=64)
    with pytest.raises(PosbenchError, match="--pose 64 needs positions up to 63, but 'learned' encodes only 16"):
        train(model_cfg, cfg, out=tmp_path / "learned", show_progress=False)


def test_pose_trains_at_skipped_ids_records_them_resumes_bitwise_and_evaluates_at_0_to_n(corpus, tmp_path,
                                                                                         monkeypatch):
    model_cfg, cfg = tiny_train(corpus, "rotary", steps=8, save_every=4, pose=64)
    seen = []
    forward = GPT.forward

    def spy(self, idx, start=0, cache=None, positions=None):
        seen.append((self.training, positions))
        return forward(self, idx, start, cache, positions)

    with monkeypatch.context() as m:
        m.setattr(GPT, "forward", spy)
        whole = train(model_cfg, cfg, out=tmp_path / "whole", show_progress=False)
        report, _ = evaluate_run(whole.run_dir, EvalSettings(lengths=[16, 32], max_tokens=128, context_use=False))
    training = [p for is_training, p in seen if is_training]
    assert len(training) == 8 and all(p is not None and p[0] == 0 and p.max() < 64 for p in training)
    assert any(p[-1] > 15 for p in training), "some draw skips"
    assert all(p is None for is_training, p in seen if not is_training), "evaluated at 0..n-1"
    assert "random_positions" not in report
    assert json.loads((whole.run_dir / "config.json").read_text())["train"]["pose"] == 64
    resumed = interrupted_then_resumed(model_cfg, cfg, tmp_path / "cut", monkeypatch, at_call=6)
    assert resumed.resumed_from == 5 and losses(resumed.run_dir) == losses(whole.run_dir)
    a, b = load_file(str(whole.run_dir / "model.safetensors")), load_file(str(resumed.run_dir / "model.safetensors"))
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert RunConfig.from_json({"model": {}, "train": {"seed": 0}, "data": {}}).identity() == \
        RunConfig.from_json({"model": {}, "train": {"seed": 0, "pose": None}, "data": {}}).identity()


def test_task_samplers_draw_pose_ids_for_each_batchs_length_and_label_the_runs():
    sampler = TaskSampler("copy", 16, 4, seed=0, pose=64)
    for _ in range(20):
        x, _ = sampler.next_batch()
        ids = sampler.next_positions()
        assert ids.shape == (x.size(1),) and ids[0] == 0 and ids.max() < 64 and (ids.diff() >= 1).all()
    assert task_run_label("alibi", None, 64) == "alibi+pose64"
