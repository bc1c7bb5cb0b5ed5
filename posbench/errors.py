"""User-facing errors: the CLI prints their message on one line and exits with code 2 (an interrupted
run: how to resume it, and 130)."""

from __future__ import annotations

from pathlib import Path


class PosbenchError(Exception):
    """Bad input or a state the user can fix (missing file, bad flag value, corrupt run)."""


class LengthError(PosbenchError):
    """A model was asked for more positions than its method supports (e.g. `learned` past its table)."""


class Interrupted(Exception):
    """Ctrl-C during training; a checkpoint was saved at `step` in `run_dir`."""

    def __init__(self, run_dir: Path, step: int) -> None:
        super().__init__(f"interrupted at step {step}")
        self.run_dir, self.step = run_dir, step

    def __reduce__(self):  # pickled whole, from a worker process of `--jobs` to the main one
        return Interrupted, (self.run_dir, self.step)
