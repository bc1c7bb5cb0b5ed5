"""What every experiment (compare, tasks, and the suites to come) writes the same way: results.json,
stamped with the versions that produced it, and results.csv beside it, one line per row and length."""

from __future__ import annotations

import csv
import io
import platform
from collections.abc import Iterable, Sequence
from pathlib import Path

import torch

from .. import __version__
from ..fileio import atomic_write
from ..runs.folder import write_json


def versions() -> dict[str, str]:
    """The software a result was measured with."""
    return {"posbench": __version__, "torch": torch.__version__, "python": platform.python_version()}


def csv_text(columns: Sequence[str], lines: Iterable[Sequence]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(columns)
    writer.writerows(lines)
    return buffer.getvalue()


def write_results(out: Path, results: dict, csv: str) -> Path:
    """out/results.json and out/results.csv (`csv`), each atomically; `results` gains its "versions" stamp,
    so what the caller returns is what the file holds."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    results["versions"] = versions()
    write_json(out / "results.json", results)
    atomic_write(out / "results.csv", csv.encode())
    return out
