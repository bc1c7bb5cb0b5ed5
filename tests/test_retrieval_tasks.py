"""The retrieval suite: each generator's answer is what its prompt says, its random choices are
uniform, evaluation instances never appear in training, and the ranking across tasks is Kazemnejad
et al.'s mean reciprocal rank."""

import numpy as np
import pytest

from posbench.tasks.data import RETRIEVAL, TASKS, TaskSampler, eval_batch
from posbench.tasks.generators.common import KEY, QUERY, SEP
from posbench.tasks.generators.counting import MAX_COUNT
from posbench.tasks.generators.selective_copy import BLANK, COPIED
from posbench.tasks.run import mean_reciprocal_rank, parse_tasks


def needles(tokens: np.ndarray, width: int) -> list[tuple[int, tuple[int, ...]]]:
    """(key, value tokens) of every KEY marker in the prompt (up to the query)."""
    end = int(np.flatnonzero(tokens == QUERY)[0])
    return [(int(tokens[i + 1]), tuple(int(t) for t in tokens[i + 2 : i + 2 + width]))
            for i in np.flatnonzero(tokens[:end] == KEY)]


@pytest.mark.parametrize("length", [24, 96])
def test_every_answer_is_what_the_prompt_says(length):
    rng = np.random.default_rng(0)
    for _ in range(200):
        inst = TASKS["multikey"].make(rng, length, None)
        found = dict(needles(inst.tokens, 2))
        assert len(found) == 3 and tuple(inst.answer) == found[int(inst.tokens[-3])]
        inst = TASKS["multiquery"].make(rng, length, None)
        found, q = dict(needles(inst.tokens, 2)), inst.tokens[-8:-4]
        assert q[0] == QUERY and q[3] == SEP and tuple(inst.answer) == found[int(q[1])] + found[int(q[2])]
        inst = TASKS["multivalue"].make(rng, length, None)
        key = int(inst.tokens[-4])
        assert tuple(inst.answer) == tuple(v[0] for k, v in needles(inst.tokens, 1) if k == key)
        inst = TASKS["counting"].make(rng, length, None)
        assert inst.answer[0] - 5 == (inst.tokens[:-2] == KEY).sum()
        inst = TASKS["variables"].make(rng, length, None)
        assigned = dict(needles(inst.tokens, 1))  # variable -> what it takes
        value = int(inst.tokens[-2])
        while value in assigned:  # follow the chain back to a value
            value = assigned[value][0]
        assert value == inst.answer[0]


def chi_square_uniform(counts: np.ndarray) -> float:
    expected = counts.sum() / len(counts)
    return float(((counts - expected) ** 2 / expected).sum())


def test_the_queried_needle_the_count_and_the_needles_places_are_uniform():
    """chi-square against uniform (99.9% critical values: 2 df 13.8, 8 df 26.1, 9 df 27.9)."""
    rng = np.random.default_rng(1)
    queried, counts = np.zeros(3), np.zeros(MAX_COUNT)
    for _ in range(3000):
        inst = TASKS["multikey"].make(rng, 64, None)
        order = [k for k, _ in needles(inst.tokens, 2)]
        queried[order.index(int(inst.tokens[-3]))] += 1
        inst = TASKS["counting"].make(rng, 64, None)
        counts[inst.answer[0] - 6] += 1
    assert chi_square_uniform(queried) < 13.8
    assert chi_square_uniform(counts) < 26.1
    # every single needle (the counting markers) at a uniformly random place of the prompt
    marks = np.zeros(10)
    for _ in range(2000):
        inst = TASKS["counting"].make(rng, 103, None)  # 100 places between BOS and QUERY: 10 bins of 10
        for i in np.flatnonzero(inst.tokens[:-2] == KEY):
            marks[(i - 1) // 10] += 1
    assert chi_square_uniform(marks) < 27.9


@pytest.mark.parametrize("task", RETRIEVAL)
def test_no_evaluation_instance_is_ever_a_training_instance(task):
    train_len = 24
    evaluation = {tuple(row.tolist()) for row in eval_batch(task, train_len, 200, seed=0)[0].numpy()}
    sampler = TaskSampler(task, train_len, 32, seed=0, min_len=train_len)
    seen = {tuple(row.tolist()) for _ in range(300) for row in sampler.next_batch()[0].numpy()}
    assert len(seen) > 9000 and not evaluation & seen


def test_mean_reciprocal_rank_ranks_per_task_and_seed_then_averages():
    def row(task, label, seed, accuracy):
        return {"task": task, "label": label, "seed": seed, "train_max_len": 10,
                "results": [{"length": 10, "accuracy": 1.0}, {"length": 20, "accuracy": accuracy}]}

    rows = [row("a", "x", 0, 0.9), row("a", "y", 0, 0.5), row("a", "z", 0, 0.5),
            row("b", "x", 0, 0.1), row("b", "y", 0, 0.8), row("b", "z", 0, 0.3),
            row("a", "x", 1, 0.9), row("a", "y", 1, 0.1), row("a", "z", 1, 0.2),
            row("b", "x", 1, 0.9), row("b", "y", 1, 0.1), row("b", "z", 1, 0.2)]
    ranking = mean_reciprocal_rank(rows)
    # seed 0: task a ranks x 1, y and z 2.5 (tied); task b y 1, z 2, x 3. Seed 1: x 1, z 2, y 3 in both
    assert ranking["x"]["per_seed"] == pytest.approx([(1 + 1 / 3) / 2, 1.0])
    assert ranking["y"]["per_seed"] == pytest.approx([(1 / 2.5 + 1) / 2, 1 / 3])
    assert ranking["z"]["per_seed"] == pytest.approx([(1 / 2.5 + 1 / 2) / 2, 1 / 2])
    assert ranking["x"]["mrr_ci"][0] < ranking["x"]["mrr"] < ranking["x"]["mrr_ci"][1]
    # two seeds: t's interval (df 1) runs far past what a reciprocal rank among three can be, 1/3 to 1
    for label in ("x", "y"):
        assert ranking[label]["mrr_ci"] == pytest.approx([1 / 3, 1.0])


def test_retrieval_names_the_suite():
    assert parse_tasks("retrieval,copy") == [*RETRIEVAL, "copy"]


@pytest.mark.parametrize("length", [16, 26, 96])  # prompts of 10, 20, 90 places: 10 equal bins
def test_selective_copy_answers_the_content_in_order_and_places_it_uniformly(length):
    """Gu & Dao 2023 (Mamba, Sec. 3.1): the non-blank symbols, in their order, after SEP; every
    placement equally likely (chi-square, 99.9% critical value for 9 df: 27.9), the length only
    adding blanks."""
    rng = np.random.default_rng(2)
    places = np.zeros(10)
    for _ in range(1500):
        inst = TASKS["selective-copy"].make(rng, length, None)
        prompt = inst.tokens[1 : int(np.flatnonzero(inst.tokens == SEP)[0])]
        content = prompt[prompt != BLANK]
        assert len(inst.tokens) == length and len(content) == COPIED == len(set(content.tolist()))
        assert tuple(inst.answer) == tuple(content)
        for i in np.flatnonzero(prompt != BLANK):
            places[i * 10 // len(prompt)] += 1
    assert chi_square_uniform(places) < 27.9


def test_selective_copy_evaluation_instances_never_appear_in_training():
    evaluation = {tuple(row.tolist()) for row in eval_batch("selective-copy", 24, 200, seed=0)[0].numpy()}
    sampler = TaskSampler("selective-copy", 24, 32, seed=0, min_len=24)
    seen = {tuple(row.tolist()) for _ in range(100) for row in sampler.next_batch()[0].numpy()}
    assert len(seen) > 3000 and not evaluation & seen
