"""Shared fixtures: the real encoder, loaded once per session."""

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def sentence_encoder():
    """The bundled all-MiniLM-L6-v2 encoder, loaded once for the whole session."""
    from embetter_assets.encoder import SentenceEncoder

    encoder = SentenceEncoder()
    encoder.transform(["warm up"])
    return encoder
