"""`posbench tasks`: the generators make what they claim, the loss reads answers only, scoring
gives 1.0 to the reference answer and chance to a constant, and a tiny run writes its files."""

import json
import sys

import numpy as np
import pytest
import torch
from torch import nn

from posbench import cli
from posbench.evaluation.stats import wilson_interval
from posbench.experiments.presets import TASK_PRESETS, TaskPreset
from posbench.runs.folder import load_run
from posbench.tasks.data import IGNORE, TASKS, VOCAB_SIZE, TaskSampler, collate, eval_batch, eval_seed
from posbench.tasks.generators.common import BOS, KEY, PASSKEY_LEN, QUERY, SEP
from posbench.tasks.generators.copy import make_reverse
from posbench.tasks.generators.passkey import make_passkey
from posbench.tasks.generators.recall import make_recall
from posbench.tasks.run import score

from .helpers import run_cli


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_task_makes_instances_of_the_length_asked(name):
    rng = np.random.default_rng(0)
    for length in (max(12, TASKS[name].min_len), 32, 64, 128):
        inst = TASKS[name].make(rng, length, None)
        assert len(inst.tokens) == length and inst.tokens[0] == BOS
        assert 0 < inst.answer_start < length and inst.tokens.max() < VOCAB_SIZE


def test_reverse_answers_the_reversed_input_and_copy_the_input():
    rng = np.random.default_rng(1)
    for length in (6, 20, 40):
        inst = make_reverse(rng, length)
        sep = list(inst.tokens).index(SEP)
        assert list(inst.answer) == list(inst.tokens[1:sep][::-1])
        copy = TASKS["copy"].make(rng, length, None)
        assert list(copy.answer) == list(copy.tokens[1:list(copy.tokens).index(SEP)])


@pytest.mark.parametrize("depth", [0.0, 0.25, 0.5, 1.0])
def test_passkey_key_sits_at_the_stated_depth(depth):
    inst = make_passkey(np.random.default_rng(2), 51, depth)
    filler = 51 - 3 - 2 * PASSKEY_LEN
    at = int(round(depth * filler)) + 1  # after BOS and `depth` of the filler
    assert inst.tokens[at] == KEY and list(inst.tokens).count(KEY) == 1
    assert list(inst.tokens[at + 1:at + 1 + PASSKEY_LEN]) == list(inst.answer)
    assert inst.tokens[inst.answer_start - 1] == QUERY and inst.depth == pytest.approx(depth)


def test_recall_queries_a_present_key_and_answers_its_value():
    rng = np.random.default_rng(3)
    for _ in range(20):
        inst = make_recall(rng, 40)
        keys, values = inst.tokens[1:-3:2], inst.tokens[2:-3:2]
        assert len(set(keys)) == len(keys), "keys are distinct"
        assert inst.tokens[-3] == QUERY and inst.tokens[-2] in keys
        assert inst.answer[0] == values[list(keys).index(inst.tokens[-2])]


def test_loss_covers_only_answer_tokens():
    rng = np.random.default_rng(4)
    instances = [TASKS[name].make(rng, n, None) for name, n in (("copy", 10), ("passkey", 20), ("recall", 14))]
    x, y = collate(instances)
    assert x.shape == y.shape == (3, 19)
    for row, inst in enumerate(instances):
        n = len(inst.tokens) - 1
        assert torch.equal(x[row, :n], torch.from_numpy(inst.tokens[:-1]))
        scored = (y[row] != IGNORE).nonzero().flatten().tolist()
        assert scored == list(range(inst.answer_start - 1, n)), "targets only where the next token is an answer"
        assert torch.equal(y[row, scored], torch.from_numpy(inst.answer))


def test_sampler_is_deterministic_and_resumes():
    a, b = TaskSampler("recall", 32, 8, seed=5), TaskSampler("recall", 32, 8, seed=5)
    a.next_batch()
    b.load_state_dict(a.state_dict())
    assert all(torch.equal(u, v) for u, v in zip(a.next_batch(), b.next_batch(), strict=True))
    assert max(len(x) for x in a.next_batch()) <= 31  # never past the training maximum


class Lookup(nn.Module):
    """A "model" that answers from a table: one-hot logits of the reference (or a constant) token."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, constant: int | None = None) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.zeros(1))
        self.table = {tuple(row.tolist()): target for row, target in zip(x, y, strict=True)}
        self.constant = constant

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        targets = torch.stack([self.table[tuple(row.tolist())] for row in x]).clamp(min=0)
        if self.constant is not None:
            targets = torch.full_like(targets, self.constant)
        return nn.functional.one_hot(targets, VOCAB_SIZE).float()


@pytest.mark.parametrize("name", sorted(TASKS))
def test_reference_answers_score_one_and_a_constant_scores_chance(name):
    x, y = eval_batch(name, 24, 3000, seed=0)
    assert score(Lookup(x, y), x, y)["accuracy"] == 1.0
    assert score(Lookup(x, y), x, y)["token_accuracy"] == 1.0
    answer_symbol = int(y[y != IGNORE][0])  # a symbol the answers are drawn from
    constant = score(Lookup(x, y, constant=answer_symbol), x, y)
    assert constant["token_accuracy"] == pytest.approx(TASKS[name].chance, abs=0.02)
    lo, hi = constant["accuracy_ci"]
    assert lo <= constant["accuracy"] <= hi


def test_wilson_interval():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(50, 100)
    assert lo == pytest.approx(0.4038, abs=1e-3) and hi == pytest.approx(0.5962, abs=1e-3)


@pytest.fixture
def tiny_tasks(monkeypatch):
    monkeypatch.setitem(TASK_PRESETS, "tiny", TaskPreset(
        "tiny", model=dict(n_layer=1, n_head=2, d_model=16),
        train=dict(batch_size=4, steps=4, warmup=1), train_max_len=16, instances=8, depths=(0.0, 1.0),
        depth_instances=4))


def test_tasks_command_trains_scores_and_writes(tiny_tasks, tmp_path, monkeypatch, capsys):
    out = tmp_path / "tasks"
    args = ["tasks", "--task", "copy,passkey", "--pos", "none,learned", "--preset", "tiny",
            "--out", str(out), "--device", "cpu", "--quiet"]
    code, printed, _ = run_cli(args, capsys, monkeypatch)
    assert code in (0, None)
    assert "exact match by length" in printed and "n/a" in printed  # learned cannot run past its table
    results = json.loads((out / "results.json").read_text())
    assert [(r["task"], r["pos"]) for r in results["runs"]] == [
        ("copy", "none"), ("copy", "learned"), ("passkey", "none"), ("passkey", "learned")]
    for run in results["runs"]:
        assert run["train_max_len"] == 16 and run["label"] == run["pos"]
        assert [r["length"] for r in run["results"]] == [16, 32, 48, 64]
        assert {"accuracy", "accuracy_ci", "token_accuracy"} <= set(run["results"][0])
    assert len(results["runs"][2]["depths"]) == 4 * 2
    assert (out / "results.csv").read_text().count("\n") == 1 + 4 * 4 + 2 * 8
    for png in ("accuracy_vs_length.png", "passkey_heatmap.png"):
        assert (out / png).read_bytes().startswith(b"\x89PNG")
    model, tokenizer, config = load_run(out / "copy" / "none")
    assert tokenizer is None and config.data["task"] == "copy" and model.config.vocab_size == VOCAB_SIZE

    # a second call reuses the finished runs
    before = (out / "copy" / "none" / "model.safetensors").stat().st_mtime_ns
    run_cli(args, capsys, monkeypatch)
    assert (out / "copy" / "none" / "model.safetensors").stat().st_mtime_ns == before


def test_unknown_task(capsys, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["posbench", "tasks", "--task", "sort"])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 2 and "unknown task 'sort'" in capsys.readouterr().err


def test_sampler_with_random_positions_draws_sorted_distinct_ids_and_resumes():
    """Randomized positions (Ruoss et al. 2023) on tasks: each batch's ids are sorted, distinct, in
    [0, M), one per token of that batch; the instances are those of the plain sampler; resume draws on."""
    plain = TaskSampler("copy", 16, 4, seed=3)
    a, b = TaskSampler("copy", 16, 4, seed=3, max_position=64), TaskSampler("copy", 16, 4, seed=3, max_position=64)
    for _ in range(5):
        x, y = a.next_batch()
        ids = a.next_positions()
        assert ids.shape == (x.size(1),) and ids.min() >= 0 and ids.max() < 64
        assert torch.equal(ids, ids.unique(sorted=True))  # sorted and distinct
        assert all(torch.equal(u, v) for u, v in zip((x, y), plain.next_batch(), strict=True))
    assert plain.next_positions() is None
    b.load_state_dict(a.state_dict())
    a.next_batch(), b.next_batch()
    assert torch.equal(a.next_positions(), b.next_positions())


def test_tasks_with_random_positions_train_score_and_label_the_runs(tiny_tasks, tmp_path, monkeypatch, capsys):
    out = tmp_path / "tasks"
    code, _, _ = run_cli(["tasks", "--task", "copy", "--pos", "alibi", "--preset", "tiny", "--out", str(out),
                          "--device", "cpu", "--quiet", "--random-positions", "48"], capsys, monkeypatch)
    assert code in (0, None)
    [run] = json.loads((out / "results.json").read_text())["runs"]
    assert run["label"] == "alibi+rp48" and run["run"] == str(out / "copy" / "alibi+rp48")
    by_length = {r["length"]: r["accuracy"] for r in run["results"]}
    assert by_length[16] is not None and by_length[32] is not None  # 16, 32 <= M: drawn from [0, 48)
    assert by_length[64] is None  # 64 positions cannot be drawn from [0, 48)
    _, _, config = load_run(out / "copy" / "alibi+rp48")
    assert config.train.random_positions == 48


def test_passkey_depth_is_uniform_over_every_place():
    """20,000 uniform-depth instances with 20 places for the key: a chi-squared test of equal counts
    (rounding U * filler gave the two ends half the weight: chi-squared in the hundreds)."""
    filler = 19
    rng = np.random.default_rng(0)
    places = [round(make_passkey(rng, filler + 3 + 2 * PASSKEY_LEN).depth * filler) for _ in range(20_000)]
    counts = np.bincount(places, minlength=filler + 1)
    expected = 20_000 / (filler + 1)
    assert ((counts - expected) ** 2 / expected).sum() < 43.8  # chi-squared, 19 df, p = 0.001


def test_each_evaluation_set_has_its_own_seed():
    depths = (None, 0.0, 0.25, 0.5, 0.75, 1.0)  # the uniform set and TaskPreset.depths
    assert len({tuple(eval_seed(0, 40, d)) for d in depths}) == len(depths)
