"""Fixtures only; the helpers tests import live in tests/helpers.py."""

import pytest

from .helpers import write_corpus


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("POSBENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # one job unless a test asks for more (--jobs 2; tests/test_jobs.py): the default of two on a 2-core
    # machine would start worker processes for every compare of two methods
    monkeypatch.setenv("POSBENCH_JOBS", "1")


@pytest.fixture
def corpus(tmp_path):
    return write_corpus(tmp_path)


# the pretrained-model tests' fixtures (tests/test_pretrained*.py): a corpus file, and the four tiny Hugging
# Face models built on its text (tests/hf_models.py, which needs transformers: imported only when used)
@pytest.fixture(scope="module")
def corpus_path(tmp_path_factory):
    return write_corpus(tmp_path_factory.mktemp("text"), n_lines=300)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, corpus_path):
    from .hf_models import build_models  # transformers is an optional extra

    return build_models(tmp_path_factory.mktemp("models"), open(corpus_path).read())
