"""`posbench sample`: KV-cache decoding equals full forward passes, seeds, limits, the command."""


import pytest
import torch

from posbench.errors import LengthError, PosbenchError
from posbench.sample import generate, next_token
from posbench.train import train

from .helpers import ALL_METHODS, run_cli, tiny_model, tiny_train


@pytest.mark.parametrize("pos", ALL_METHODS)
def test_greedy_generation_equals_argmax_of_full_forward_reruns(pos):
    # trained at 16 positions, decoded to 25: past the training length (learned: within its table)
    model = tiny_model(pos, train_len=32 if pos == "learned" else 16)
    prompt = torch.randint(0, 64, (2, 5), generator=torch.Generator().manual_seed(0))
    out = generate(model, prompt, 20, temperature=0)
    assert out.shape == (2, 25) and torch.equal(out[:, :5], prompt)
    seq = prompt
    with torch.no_grad():
        for _ in range(20):  # no cache: the whole sequence again for every token
            seq = torch.cat((seq, model(seq)[:, -1].argmax(-1, keepdim=True)), dim=1)
    assert torch.equal(out, seq)


def test_same_seed_same_tokens_and_top_k():
    model = tiny_model("alibi")
    prompt = torch.tensor([[1, 2, 3]])

    def draw(seed, **kw):
        return generate(model, prompt, 30, generator=torch.Generator().manual_seed(seed), **kw)

    assert torch.equal(draw(0, temperature=0.8, top_k=50), draw(0, temperature=0.8, top_k=50))
    assert not torch.equal(draw(0, temperature=1.0), draw(1, temperature=1.0))
    assert torch.equal(draw(3, top_k=1), generate(model, prompt, 30, temperature=0)), "top-1 is greedy"
    assert torch.equal(generate(model, prompt, 0), prompt)

    logits = torch.tensor([[0.0, 3.0, 1.0, 2.0, -1.0]]).repeat(500, 1)
    drawn = next_token(logits, 1.0, 2, torch.Generator().manual_seed(0))  # (500, 1)
    assert set(drawn.flatten().tolist()) == {1, 3}, "only the two most likely tokens"
    assert next_token(logits[:1], 0.0, None, None).item() == 1


def test_learned_stops_at_its_table_with_a_clear_error():
    model = tiny_model("learned", train_len=16)
    prompt = torch.zeros(1, 10, dtype=torch.long)
    assert generate(model, prompt, 7, temperature=0).shape == (1, 17)  # positions 0..15 fed
    with pytest.raises(LengthError, match="'learned' positions stop at 16: .* room for at most 7 new tokens, 8"):
        generate(model, prompt, 8)
    with pytest.raises(LengthError, match="the prompt alone has 20 tokens"):
        generate(model, torch.zeros(1, 20, dtype=torch.long), 1)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n_tokens=-1), "--tokens must be >= 0"),
    (dict(temperature=-0.5), "--temperature must be >= 0"),
    (dict(top_k=-3), "--top-k must be >= 0"),
])
def test_bad_arguments(kwargs, message):
    args = dict(n_tokens=3, temperature=1.0, top_k=None) | kwargs
    with pytest.raises(PosbenchError, match=message):
        generate(tiny_model("none"), torch.tensor([[1]]), **args)
    with pytest.raises(PosbenchError, match="at least one token"):
        generate(tiny_model("none"), torch.zeros(1, 0, dtype=torch.long), 3)


def test_cli_samples_a_trained_run(corpus, tmp_path, capsys, monkeypatch):
    model_cfg, cfg = tiny_train(corpus, pos="learned")  # bytes tokenizer, trained at 16 positions
    run = str(train(model_cfg, cfg, out=tmp_path / "run", show_progress=False).run_dir)
    args = ["sample", run, "--prompt", "the ", "--tokens", "12", "--seed", "3", "--device", "cpu"]
    code, first, _ = run_cli(args, capsys, monkeypatch)
    assert code in (0, None)
    assert "(learned), 4 prompt + 12 new tokens" in first and "\nthe " in first
    assert run_cli(args, capsys, monkeypatch)[1] == first, "same seed, same text"
    code, greedy, _ = run_cli([*args, "--temperature", "0"], capsys, monkeypatch)
    assert code in (0, None) and "temperature 0," in greedy
    code, _, err = run_cli(["sample", run, "--prompt", "the ", "--tokens", "40"], capsys, monkeypatch)
    assert code == 2 and "Traceback" not in err
    assert "'learned' positions stop at 16" in err and "room for at most 13 new tokens" in err
    code, _, err = run_cli(["sample", run, "--prompt", ""], capsys, monkeypatch)
    assert code == 2 and "--prompt is empty" in err
