import numpy as np
import pytest
from sklearn.base import clone

from embetter_assets.encoder import SentenceEncoder, resolve_model_path


def test_encoder_returns_unit_length_384_wide_rows(sentence_encoder):
    X = sentence_encoder.transform(["The striker scored twice.", "Shares fell sharply on Monday."])

    assert X.shape == (2, 384)
    assert X.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(X, axis=1), 1.0, rtol=1e-5)


def test_encoder_separates_topics_by_cosine(sentence_encoder):
    football, match, markets = sentence_encoder.transform(
        ["The striker scored twice in the cup final.", "The goalkeeper saved a late penalty.", "The central bank raised interest rates."]
    )

    assert football @ match > football @ markets


def test_encoder_handles_empty_input_and_huge_text(sentence_encoder):
    assert sentence_encoder.transform([]).shape == (0, 384)
    assert sentence_encoder.transform(["word " * 500_000]).shape == (1, 384)


def test_encoder_rejects_non_strings(sentence_encoder):
    with pytest.raises(ValueError, match="position 1"):
        sentence_encoder.transform(["fine", None])


def test_encoder_rejects_a_single_string(sentence_encoder):
    with pytest.raises(ValueError, match="takes a list of texts, got a single string"):
        sentence_encoder.transform("one text")


def test_encoder_chunks_keep_input_order(sentence_encoder):
    texts = ["a much longer sentence about the economy and markets", "short", "medium length text"]

    np.testing.assert_allclose(
        sentence_encoder.transform_in_chunks(texts, chunk_size=2), sentence_encoder.transform(texts), atol=1e-5
    )


def test_encoder_unknown_model_is_rejected_without_download():
    with pytest.raises(ValueError, match="nothing is downloaded"):
        resolve_model_path("some-org/model-that-is-not-here")


def test_encoder_clones_without_loading_model():
    encoder = SentenceEncoder(batch_size=8)

    assert clone(encoder).get_params()["batch_size"] == 8
