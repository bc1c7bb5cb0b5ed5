"""Progress where stdout is not a terminal: plain periodic lines (start, about every 10 s or 1% of the
work, whichever is rarer, finish) instead of a live bar; on a terminal the bar as before."""

import io

from rich.console import Console
from rich.progress import Progress

from posbench import cli
from posbench import progress as progress_module
from posbench.experiments.presets import CORPUS_PRESETS, CorpusPreset
from posbench.progress import LineProgress, make_progress

from .helpers import run_cli


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run_job(total: int, seconds_per_step: float) -> list[str]:
    clock, out = Clock(), io.StringIO()
    progress = LineProgress(console=Console(file=out, width=80), get_time=clock)
    with progress:
        task = progress.add_task("train alibi", total=total, unit="steps")
        for _ in range(total):
            clock.now += seconds_per_step
            progress.advance(task)
    return out.getvalue().splitlines()


def test_a_terminal_gets_the_live_bar_and_a_log_file_gets_lines():
    assert type(make_progress(Console(file=io.StringIO(), force_terminal=True))) is Progress
    assert isinstance(make_progress(Console(file=io.StringIO())), LineProgress)
    assert type(make_progress(Console(file=io.StringIO()), disable=True)) is Progress, "disabled: silent"


def test_lines_every_10_seconds_when_1_percent_is_quicker():
    lines = run_job(1000, 0.5)  # 500 s; 1% (10 steps) every 5 s: a line every 10 s
    assert lines[0] == "train alibi · 0/1,000 steps (0%) · elapsed 0:00:00 · eta ?"
    assert len(lines) == 1 + 50
    assert lines[1].startswith("train alibi · 20/1,000 steps (2%) · elapsed 0:00:10 · eta 0:08:10")
    assert lines[-1] == "train alibi · 1,000/1,000 steps (100%) · elapsed 0:08:20", "finished: no eta"
    assert all("eta" in line for line in lines[:-1])


def test_lines_every_1_percent_when_10_seconds_is_quicker():
    lines = run_job(200, 30.0)  # 1% = 2 steps = 60 s
    assert len(lines) == 1 + 100
    assert lines[1].startswith("train alibi · 2/200 steps (1%) · elapsed 0:01:00")


def test_a_short_job_prints_its_start_and_end_only():
    assert len(run_job(500, 0.001)) == 2


def test_compare_into_a_log_prints_progress_lines_during_the_run(corpus, tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(CORPUS_PRESETS, "tiny", CorpusPreset(
        "test size", model=dict(n_layer=1, n_head=2, d_model=16),
        train=dict(tokenizer="bytes", train_len=16, batch_size=4, steps=6, warmup=2, eval_every=3,
                   eval_tokens=256, log_every=1, save_every=3),
        max_len=32, eval_tokens=256))
    monkeypatch.setattr(progress_module, "LINE_EVERY_S", 0.0)  # the 1% rule alone: a line per step here
    args = ["compare", "--preset", "tiny", "--pos", "alibi,rotary", "--data", corpus, "--device", "cpu",
            "--out", str(tmp_path / "cmp")]
    code, out, err = run_cli(args, capsys, monkeypatch)
    assert code in (0, None), err
    table = out.index("perplexity by evaluation length")
    lines = out[:table].splitlines()
    assert "\x1b[" not in out, "no terminal control codes in a log"
    for method in ("alibi", "rotary"):
        steps = [line for line in lines if line.startswith(f"train {method} · loss ") and " steps (" in line]
        assert len(steps) >= 5, lines
        assert "tok/s" in steps[0] and "eta" in steps[0] and "6/6 steps (100%)" in steps[-1]
    assert any(line.startswith("compare alibi (1/2) · 1/2 (50%)") for line in lines), lines
    assert any(line.startswith("eval ") for line in lines), lines


def test_output_into_a_log_keeps_wide_tables(monkeypatch):
    """A cluster job's log (no terminal, no COLUMNS): rich would fold tables to 80 columns."""
    monkeypatch.delenv("COLUMNS", raising=False)
    log = io.StringIO()  # not a terminal
    assert cli._console(log).width == cli.LOG_WIDTH
    monkeypatch.setenv("COLUMNS", "100")  # the user's say wins
    assert cli._console(log).width == 100
