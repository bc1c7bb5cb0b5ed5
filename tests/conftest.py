"""Fixtures only; the helpers tests import live in tests/helpers.py."""

import pytest

from .helpers import write_corpus


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path)
