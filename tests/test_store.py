import duckdb
import numpy as np
import polars as pl
import pytest

from embetter_assets.finetune import FeedForwardFinetuner, load_finetuner
from embetter_assets.ingest import content_hash
from embetter_assets.store import EmbeddingStore, StoreError


def _texts(batch: str, texts: list[str], prefix: str = "t") -> pl.DataFrame:
    return pl.DataFrame(
        {
            "text_id": [f"{prefix}{i}" for i in range(len(texts))],
            "row_number": pl.Series(range(1, len(texts) + 1), dtype=pl.Int32),
            "content_hash": [content_hash(text) for text in texts],
            "text": texts,
            "source_file": [f"{batch}"] * len(texts),
        }
    )


@pytest.fixture
def store(tmp_path):
    return EmbeddingStore(tmp_path / "store.duckdb")


def test_store_round_trips_texts_and_384_wide_embeddings(store):
    frame = _texts("a.csv", ["first text", "second text", "first text"])
    store.replace_text_batch("a.csv", frame)
    missing = store.texts_missing_base_embedding("a.csv", "model-x")
    embeddings = np.random.default_rng(0).normal(size=(missing.height, 384)).astype(np.float32)

    written = store.add_base_embeddings("model-x", missing["content_hash"].to_list(), embeddings)

    assert store.texts("a.csv")["text"].to_list() == ["first text", "second text", "first text"]
    assert missing.height == 2
    assert written == 2
    np.testing.assert_array_equal(store.base_embeddings(missing["content_hash"].to_list()[::-1], "model-x"), embeddings[::-1])
    width = store.query("SELECT array_length(embedding) AS width FROM base_embeddings LIMIT 1")["width"][0]
    assert width == 384
    assert store.texts_missing_base_embedding("a.csv", "model-x").height == 0
    assert store.texts_missing_base_embedding("a.csv", "model-y").height == 2


def test_store_replaces_a_batch_exactly(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two", "three"]))
    store.replace_text_batch("b.csv", _texts("b.csv", ["four"], prefix="b"))
    for _ in range(3):
        store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two"]))

    counts = dict(store.query("SELECT batch, count(*) AS n FROM texts GROUP BY batch").iter_rows())
    assert counts == {"a.csv": 2, "b.csv": 1}


def test_store_rejects_text_id_from_another_batch_and_keeps_data(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two"]))

    with pytest.raises(StoreError, match="'t0' is already stored in text batch 'a.csv'"):
        store.replace_text_batch("b.csv", _texts("b.csv", ["three"]))
    assert store.texts()["text"].to_list() == ["one", "two"]


@pytest.mark.parametrize(
    ("bad_row", "message"),
    [(np.full(384, np.nan), "NaN or infinity"), (np.full(384, np.inf), "NaN or infinity"), (np.zeros(384), "all zeros")],
)
def test_store_refuses_poisoned_embeddings(store, bad_row, message):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two"]))
    embeddings = np.ones((2, 384), dtype=np.float32)
    embeddings[1] = bad_row

    with pytest.raises(StoreError, match=message):
        store.add_base_embeddings("m", [content_hash("one"), content_hash("two")], embeddings)
    assert not store.table_exists("base_embeddings")


def test_store_refuses_embeddings_of_another_width(store):
    store.add_base_embeddings("m", ["h1"], np.ones((1, 384), dtype=np.float32))

    with pytest.raises(StoreError, match="FLOAT\\[384\\]"):
        store.add_base_embeddings("other", ["h1"], np.ones((1, 768), dtype=np.float32))


def test_store_labels_latest_batch_wins_in_arrival_order(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two"]))
    first = pl.DataFrame({"text_id": ["t0", "t1"], "label": ["x", "y"], "split": ["train", "test"], "row_number": [1, 2]})
    second = pl.DataFrame({"text_id": ["t0"], "label": ["z"], "split": ["train"], "row_number": [1]})
    store.replace_label_batch("first.csv", first.with_columns(pl.lit("first.csv").alias("source_file")))
    store.replace_label_batch("second.csv", second.with_columns(pl.lit("second.csv").alias("source_file")))

    current = store.current_labels()

    assert dict(zip(current["text_id"], current["label"])) == {"t0": "z", "t1": "y"}
    assert current["text_id"].to_list() == ["t1", "t0"]
    assert current["content_hash"].to_list() == [content_hash("two"), content_hash("one")]


def test_store_rejects_labels_for_unknown_text_ids(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one"]))
    labels = pl.DataFrame(
        {"text_id": ["t0", "nope"], "label": ["x", "y"], "split": ["train", "train"], "row_number": [1, 2], "source_file": ["l.csv"] * 2}
    )

    with pytest.raises(StoreError, match="row 2 \\('nope'\\)"):
        store.replace_label_batch("l.csv", labels)
    assert store.query("SELECT count(*) AS n FROM labels")["n"][0] == 0


def test_store_round_trips_finetuner_weights(store):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 384)).astype(np.float32)
    y = np.array(["sport", "politics"] * 20)
    finetuner = FeedForwardFinetuner(hidden_dim=16, n_epochs=5, random_state=0).fit(X, y)

    version = store.add_finetuner(
        kind="feedforward", params=finetuner.get_params(), model="m", input_dim=384, output_dim=16,
        classes=list(finetuner.classes_), n_train=40, label_batches=["l.csv"], weights=finetuner.to_bytes(),
    )
    stored = store.latest_finetuner()

    assert version == 1
    assert stored["version"] == 1
    np.testing.assert_array_equal(load_finetuner(stored["weights"]).transform(X), finetuner.transform(X))


def test_store_adds_fingerprint_column_to_older_store(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one"]))
    with store.connect() as connection:
        connection.execute("ALTER TABLE finetuners DROP COLUMN fingerprint")
    weights = FeedForwardFinetuner(hidden_dim=4, n_epochs=1, random_state=0).fit(
        np.random.default_rng(0).normal(size=(8, 6)), np.array(["a", "b"] * 4)
    ).to_bytes()
    common = dict(kind="feedforward", params={}, model="m", input_dim=6, output_dim=4, classes=["a", "b"],
                  n_train=8, label_batches=["l.csv"], weights=weights)

    store.add_finetuner(**common, fingerprint="abc")
    store.add_finetuner(**common)

    rows = store.query("SELECT version, fingerprint FROM finetuners ORDER BY version").rows()
    assert rows == [(1, "abc"), (2, None)]


def test_store_latest_finetuner_missing_ok_returns_none(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one"]))

    assert store.latest_finetuner(missing_ok=True) is None
    with pytest.raises(StoreError, match="No finetuner is stored yet"):
        store.latest_finetuner()


def test_store_reader_gets_in_while_no_write_is_open(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one"]))

    with duckdb.connect(str(store.path), read_only=True) as reader:
        assert reader.execute("SELECT count(*) FROM texts").fetchone()[0] == 1


def test_store_appends_embeddings_chunk_by_chunk(store):
    rng = np.random.default_rng(1)
    for chunk in range(3):
        hashes = [f"h{chunk}-{i}" for i in range(4)]
        assert store.add_base_embeddings("m", hashes, rng.normal(size=(4, 384)).astype(np.float32)) == 4
        assert store.add_finetuned_embeddings(1, hashes, rng.normal(size=(4, 8)).astype(np.float32)) == 4

    assert store.query("SELECT count(*) AS n FROM base_embeddings")["n"][0] == 12
    assert store.query("SELECT count(*) AS n FROM finetuned_embeddings")["n"][0] == 12


def test_store_counts_labelled_texts_a_batch_drops(store):
    store.replace_text_batch("a.csv", _texts("a.csv", ["one", "two"]))
    labels = pl.DataFrame(
        {"text_id": ["t0", "t1"], "label": ["x", "y"], "split": ["train", "train"], "row_number": [1, 2], "source_file": ["l.csv"] * 2}
    )
    store.replace_label_batch("l.csv", labels)

    orphaned = store.replace_text_batch("a.csv", _texts("a.csv", ["one"]))

    assert orphaned == 1
    assert store.current_labels()["text_id"].to_list() == ["t0"]
