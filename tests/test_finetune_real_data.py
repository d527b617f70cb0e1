"""The finetuners on real sentence embeddings of labelled tweets.

Skipped when ``../shared/data/tweets_sentiment.parquet`` is absent, because the data set
is not part of the repository.
"""

from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import silhouette_score

from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner, load_finetuner

TWEETS = Path(__file__).resolve().parents[2] / "shared" / "data" / "tweets_sentiment.parquet"

pytestmark = pytest.mark.skipif(not TWEETS.exists(), reason=f"labelled tweets not found at {TWEETS}")


@pytest.fixture(scope="module")
def tweet_embeddings():
    """Embed 200 positive or negative tweets: 100 for training, 100 held out."""
    import polars as pl

    from embetter_assets.encoder import SentenceEncoder

    frame = (
        pl.read_parquet(TWEETS)
        .filter(pl.col("label") != "neutral")
        .sort("id")
        .sample(n=200, seed=0, shuffle=True)
    )
    X = SentenceEncoder().transform(frame["text"].to_list())
    y = frame["label"].to_numpy()
    return X[:100], y[:100], X[100:], y[100:]


@pytest.mark.parametrize("cls", [FeedForwardFinetuner, ContrastiveFinetuner])
def test_finetuner_separates_held_out_tweets(cls, tweet_embeddings):
    X_train, y_train, X_test, y_test = tweet_embeddings
    finetuner = cls(random_state=0).fit(X_train, y_train)
    X_new = finetuner.transform(X_test)
    assert finetuner.classes_.tolist() == ["negative", "positive"]
    assert silhouette_score(X_new, y_test, metric="cosine") > silhouette_score(
        X_test, y_test, metric="cosine"
    )


@pytest.mark.parametrize("cls", [FeedForwardFinetuner, ContrastiveFinetuner])
def test_saved_finetuner_matches_on_tweets(cls, tweet_embeddings):
    X_train, y_train, X_test, _ = tweet_embeddings
    finetuner = cls(random_state=0).fit(X_train, y_train)
    loaded = load_finetuner(finetuner.to_bytes())
    assert np.array_equal(loaded.transform(X_test), finetuner.transform(X_test))
