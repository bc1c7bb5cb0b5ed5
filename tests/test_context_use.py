"""The context-use diagnostic: the same targets at every context length, and verdicts that claim use
of longer context only where it lowers the loss beyond noise, on synthetic text with known truth."""

import numpy as np
import pytest
import torch
from torch import nn

from posbench.evaluation.context_use import context_use, target_spans
from posbench.evaluation.scoring import block_starts
from posbench.experiments.verdicts import add_context_comparisons, context_verdict

VOCAB = 32


class CacheLM(nn.Module):
    """A stand-in language model with a known use of context: it predicts each next token from the
    counts of the tokens among the last `window` it sees (all of them with window None), add-1/2
    smoothed. On text whose token distribution drifts by topic, more context is better up to its window."""

    def __init__(self, window: int | None = None) -> None:
        super().__init__()
        self.window = window
        self.unused = nn.Parameter(torch.zeros(1))  # scoring reads the device from a parameter

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        counts = torch.nn.functional.one_hot(idx, VOCAB).double().cumsum(1)  # (B, T, V)
        if self.window is not None:
            shifted = torch.zeros_like(counts)
            shifted[:, self.window :] = counts[:, : -self.window]
            counts = counts - shifted
        return (counts + 0.5).log().float()


def topic_text(n: int, seed: int = 0) -> np.ndarray:
    """Tokens drawn from a distribution that changes every 16,384 tokens (a topic: 6 of the 32 tokens)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n // 16384 + 1):
        topic = rng.choice(VOCAB, 6, replace=False)
        out.append(rng.choice(topic, 16384, p=rng.dirichlet(np.ones(6))))
    return np.concatenate(out)[:n].astype(np.int64)


def run(model: nn.Module, tokens: np.ndarray, contexts=(16, 32, 64, 128, 256), train_len: int = 16) -> dict:
    results = context_use(model, tokens, np.ones(VOCAB), contexts, train_len, max_tokens=4096)
    report = {"train_len": train_len, "context_use": [{"length": r.length, "mode": r.mode, "ppl": r.ppl} | {
        "tokens": r.tokens} for r in results]}
    add_context_comparisons(report, {(r.mode, r.length): [r.windows] for r in results})
    return report | {"windows": [r.windows for r in results]}


def test_every_context_scores_the_same_targets_with_that_much_context_before_them():
    starts = np.array([0, 1000, 2500])
    for context in (16, 64, 256):
        spans = target_spans(starts, 256, context, tail=4)
        assert [e - s for s, e, _ in spans] == [context] * 3  # the window: `context` tokens
        assert [(f, e) for _, e, f in spans] == [(b + 252, b + 256) for b in starts]  # the same 4 targets
    report = run(CacheLM(), topic_text(40_000))
    first = report["windows"][0]
    for w in report["windows"][1:]:
        assert np.array_equal(w.first, first.first) and np.array_equal(w.tokens, first.tokens)
        assert np.array_equal(w.block, first.block)


def test_a_model_that_sees_all_its_context_uses_it_and_the_verdict_says_so():
    report = run(CacheLM(), topic_text(40_000))
    ppl = [r["ppl"] for r in report["context_use"]]
    assert all(a > b for a, b in zip(ppl, ppl[1:], strict=False)), ppl
    assert report["context_verdict"].startswith("uses context up to 256"), report["context_verdict"]


@pytest.mark.parametrize("window", [16, 40])
def test_a_model_blind_past_its_window_shows_no_use_past_it(window):
    """Far context the model cannot see (past `window`) is, to it, as good as shuffled: the loss of
    the same targets stops falling there, and no verdict claims context past the window."""
    report = run(CacheLM(window), topic_text(40_000))
    # the previous context already gave every target (the last 4 of the window) `window` tokens
    beyond = [r for r in report["context_use"][1:] if r["vs_previous"]["previous"] - 3 >= window]
    assert beyond and all(r["vs_previous"]["ratio"] == pytest.approx(1.0, abs=1e-6) for r in beyond)
    claimed = report["context_verdict"]
    if claimed.startswith("uses context up to"):
        assert int(claimed.split()[4]) <= 2 * window, claimed
    else:
        assert claimed.startswith("uses no context past L"), claimed



def test_far_context_shuffled_across_the_text_shows_no_use_of_it():
    """The perturbation of Sun et al. 2021 (*Do Long-Range Language Models Actually Use Long-Range
    Context?*): every block's far context replaced by tokens shuffled across the whole text says
    nothing about its targets, so a model that reads all its context (which uses it on intact text,
    above) gains nothing from it: no verdict claims context past the intact near part."""
    tokens, longest, near = topic_text(40_000), 256, 32
    # the blocks context_use places: tail = L / 4 = 4 targets each, max_tokens // 4 of them wanted
    starts = block_starts(len(tokens) - 1, longest, (4096 // 4) * longest)
    shuffled = np.random.default_rng(1).permutation(tokens)
    perturbed = tokens.copy()
    for b in starts.tolist():  # blocks sit in separate strata: no two overlap
        perturbed[b : b + longest - near] = shuffled[b : b + longest - near]
    report = run(CacheLM(), perturbed)
    far = [r for r in report["context_use"][1:] if r["vs_previous"]["previous"] >= near]
    assert far and all(r["vs_previous"]["ci"][1] >= 1 for r in far), [r["vs_previous"] for r in far]  # no gain
    claimed = report["context_verdict"]
    assert claimed.startswith("uses context up to 32") or claimed.startswith("uses no context past L"), claimed


def test_a_model_that_cannot_run_past_l_is_not_said_to_ignore_context_there():
    """A learned table scores no context past L: its verdict says so, not "uses no context"."""
    at_l = {"length": 64, "mode": "context", "ppl": 50.0}
    past = [{"length": n, "mode": "context", "ppl": None, "error": "past the table"} for n in (128, 256)]
    assert context_verdict([at_l, *past], 64) == "cannot run past L: no context use measured"
    assert context_verdict([at_l], 64) == "not measured past L"
    step = {"length": 256, "mode": "context", "ppl": 50.0,
            "vs_previous": {"previous": 128, "ratio": 1.0, "ci": [0.99, 1.01]}}
    assert context_verdict([at_l, step], 64) == "uses no context past L beyond noise (1.000x [0.990–1.010] at 256)"
