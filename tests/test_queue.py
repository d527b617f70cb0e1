"""The labelling queue: selection logic, the fill-in CSV, and a round trip through Dagster on BBC News."""

import dagster as dg
import numpy as np
import polars as pl
import pytest
from bbc_slice import FAST_FINETUNER, TEXT_FILE, materialize_slice, write_bbc_slice

from embetter_assets.definitions import ALL_ASSETS
from embetter_assets.ingest import read_label_batch
from embetter_assets.labelsets import split_labels
from embetter_assets.queue import (
    QUEUE_CSV_COLUMNS,
    QueueFileError,
    classifier_margins,
    select_diverse,
    select_for_labelling,
    write_queue_csv,
)
from embetter_assets.store import EmbeddingStore

PER_TOPIC = 30
N_TRAIN = 25
N_TEST = 30
QUEUE_SIZE = 15
POOL_FACTOR = 3


# ----------------------------------------------------------------- selection logic


def _clusters(rng, centres, per_centre, spread):
    return np.vstack([centre + rng.normal(scale=spread, size=(per_centre, centres.shape[1])) for centre in centres])


def test_select_diverse_queues_one_of_many_near_copies():
    rng = np.random.default_rng(0)
    copies = np.ones((20, 16)) + rng.normal(scale=1e-3, size=(20, 16))
    spread = rng.normal(size=(20, 16))
    X = np.vstack([copies, spread])
    margins = np.concatenate([np.zeros(20), np.full(20, 0.1)])

    chosen, pool_size = select_diverse(X, margins, 5, pool_factor=8)

    assert pool_size == 40
    assert len(chosen) == 5
    assert len(set(chosen.tolist())) == 5
    assert np.sum(chosen < 20) == 1


def test_select_diverse_orders_by_margin():
    rng = np.random.default_rng(1)
    X = _clusters(rng, rng.normal(size=(6, 8)) * 5, per_centre=10, spread=0.1)
    margins = rng.uniform(size=X.shape[0])

    chosen, _ = select_diverse(X, margins, 6, pool_factor=3)

    assert np.all(np.diff(margins[chosen]) >= 0)
    assert margins[chosen].max() <= np.sort(margins)[6 * 3 - 1]


def test_select_diverse_returns_every_candidate_when_few():
    margins = np.array([0.5, 0.1, 0.3])

    chosen, pool_size = select_diverse(np.eye(3), margins, 10)

    assert chosen.tolist() == [1, 2, 0]
    assert pool_size == 3


@pytest.mark.parametrize(("size", "pool_factor"), [(0, 10), (5, 0)])
def test_select_diverse_rejects_sizes_below_one(size, pool_factor):
    with pytest.raises(ValueError, match="at least 1"):
        select_diverse(np.eye(3), np.zeros(3), size, pool_factor=pool_factor)


def test_selection_is_deterministic():
    rng = np.random.default_rng(2)
    centres = rng.normal(size=(3, 12)) * 3
    X_train = _clusters(rng, centres, per_centre=10, spread=1.0)
    y_train = np.repeat(["a", "b", "c"], 10)
    X_candidates = _clusters(rng, centres, per_centre=40, spread=1.5)

    first = select_for_labelling(X_train, y_train, X_candidates, size=8, pool_factor=4)
    second = select_for_labelling(X_train, y_train, X_candidates, size=8, pool_factor=4)

    np.testing.assert_array_equal(first.positions, second.positions)
    np.testing.assert_array_equal(first.predicted_labels, second.predicted_labels)
    assert set(first.predicted_labels) <= {"a", "b", "c"}


def test_margins_are_small_between_classes_and_large_inside():
    X_train = np.array([[-2.0, 0.0], [-2.1, 0.1], [2.0, 0.0], [2.1, -0.1]])
    y_train = np.array(["left", "left", "right", "right"])

    margins, predicted = classifier_margins(X_train, y_train, np.array([[0.0, 0.0], [-3.0, 0.0]]))

    assert margins[0] < 0.1
    assert margins[1] > 0.5
    assert predicted[1] == "left"


def test_selection_without_candidates_is_empty():
    selection = select_for_labelling(np.eye(2), np.array(["a", "b"]), np.zeros((0, 0)))

    assert selection.positions.size == 0
    assert selection.pool_size == 0


# ----------------------------------------------------------------- the CSV to fill in


def test_queue_csv_loads_as_label_batch_once_filled(tmp_path):
    queue = pl.DataFrame({"text_id": ["a", "b", "c"], "text": ["first, with a comma", "second\nover two lines", "third"]})
    path = write_queue_csv(queue, tmp_path / "queue" / "labelling_queue_v1.csv")
    written = pl.read_csv(path, infer_schema=False)
    filled = tmp_path / "labels" / path.name
    filled.parent.mkdir()
    written.with_columns(pl.Series("label", ["x", "y", "x"])).write_csv(filled)

    labels, counts = read_label_batch(filled)

    assert written.columns == QUEUE_CSV_COLUMNS
    assert written["label"].null_count() == 3
    assert written["text"].to_list() == queue["text"].to_list()
    assert labels["text_id"].to_list() == ["a", "b", "c"]
    assert labels["split"].unique().to_list() == ["train"]
    assert counts["train"] == 3
    assert "text" not in labels.columns


def test_queue_csv_loads_when_filled_in_part(tmp_path):
    queue = pl.DataFrame({"text_id": ["a", "b", "c", "d"], "text": ["one", "two", "three", "four"]})
    path = write_queue_csv(queue, tmp_path / "labelling_queue_v1.csv")
    pl.read_csv(path, infer_schema=False).with_columns(pl.Series("label", ["x", None, "y", None])).write_csv(path)

    labels, counts = read_label_batch(path)

    assert labels["text_id"].to_list() == ["a", "c"]
    assert counts["rows_without_label_skipped"] == 2


def test_queue_csv_keeps_a_filled_in_file(tmp_path):
    queue = pl.DataFrame({"text_id": ["a", "b"], "text": ["one", "two"]})
    path = write_queue_csv(queue, tmp_path / "labelling_queue_v1.csv")
    pl.read_csv(path, infer_schema=False).with_columns(pl.Series("label", ["x", None])).write_csv(path)
    before = path.read_text()

    with pytest.raises(QueueFileError, match="1 labels filled in"):
        write_queue_csv(queue, path)
    assert path.read_text() == before


def test_queue_csv_replaces_an_unfilled_file(tmp_path):
    path = write_queue_csv(pl.DataFrame({"text_id": ["a"], "text": ["one"]}), tmp_path / "q.csv")

    write_queue_csv(pl.DataFrame({"text_id": ["b"], "text": ["two"]}), path)

    assert pl.read_csv(path)["text_id"].to_list() == ["b"]


# ----------------------------------------------------------------- through Dagster, on BBC News


@pytest.fixture(scope="module")
def queued(tmp_path_factory):
    """A materialized slice with a version-1 queue, and snapshots of the labels as they were then."""
    data_dir = tmp_path_factory.mktemp("data")
    articles = write_bbc_slice(data_dir, per_topic=PER_TOPIC, n_train=N_TRAIN, n_test=N_TEST)
    instance = dg.DagsterInstance.ephemeral()
    resources = materialize_slice(
        data_dir, instance, queue_config={"size": QUEUE_SIZE, "pool_factor": POOL_FACTOR}
    )
    store = EmbeddingStore(data_dir / "embetter.duckdb")
    event = instance.get_latest_materialization_event(dg.AssetKey("labelling_queue"))
    return {
        "metadata": event.asset_materialization.metadata,
        "data_dir": data_dir,
        "articles": articles,
        "instance": instance,
        "resources": resources,
        "store": store,
        "unlabelled": store.unlabelled_texts(),
        "train": split_labels(store.current_labels()).train,
        "queue": store.labelling_queue(1),
    }


@pytest.fixture(scope="module")
def round_trip(queued):
    """Fill in a copy of the version-1 CSV from the true topics, load it as a label batch, retrain and requeue."""
    data_dir, instance, resources = queued["data_dir"], queued["instance"], queued["resources"]
    topics = dict(queued["articles"].select("id", "topic").iter_rows())
    filled = pl.read_csv(data_dir / "queue" / "labelling_queue_v1.csv", infer_schema=False)
    filled = filled.with_columns(pl.col("text_id").replace_strict(topics).alias("label"))
    filled.write_csv(data_dir / "labels" / "labelling_queue_v1.csv")

    instance.add_dynamic_partitions("label_batches", ["labelling_queue_v1.csv"])

    def run(selection, partition_key=None, config=None):
        return dg.materialize(
            ALL_ASSETS, selection=selection, partition_key=partition_key, instance=instance,
            resources=resources, run_config=config,
        )

    run(["labelled_subset"], "labelling_queue_v1.csv")
    run(["trained_finetuner"], config={"ops": {"trained_finetuner": {"config": FAST_FINETUNER}}})
    run(["finetuned_embeddings"], TEXT_FILE)
    run(["labelling_queue"], config={"ops": {"labelling_queue": {"config": {"size": QUEUE_SIZE, "pool_factor": POOL_FACTOR}}}})
    return topics


@pytest.mark.slow
def test_queue_lists_distinct_unlabelled_texts(queued):
    queue = queued["queue"]

    assert queue.height == QUEUE_SIZE
    assert queue["rank"].to_list() == list(range(1, QUEUE_SIZE + 1))
    assert queue["text_id"].n_unique() == QUEUE_SIZE
    assert set(queue["text_id"]) <= set(queued["unlabelled"]["text_id"])
    assert queued["unlabelled"].height == 5 * PER_TOPIC - N_TRAIN - N_TEST
    assert queue["text"].null_count() == 0


@pytest.mark.slow
def test_queue_takes_least_sure_texts_in_margin_order(queued):
    store, queue, train, unlabelled = queued["store"], queued["queue"], queued["train"], queued["unlabelled"]
    margins, _ = classifier_margins(
        store.finetuned_embeddings(train["content_hash"].to_list(), 1),
        train["label"].to_numpy(),
        store.finetuned_embeddings(unlabelled["content_hash"].to_list(), 1),
    )
    pool_cutoff = np.sort(margins)[QUEUE_SIZE * POOL_FACTOR - 1]

    assert queue["margin"].is_sorted()
    assert queue["margin"].max() <= pool_cutoff + 1e-9
    assert queue["margin"].median() < np.median(margins)


@pytest.mark.slow
def test_queue_csv_matches_table(queued):
    path = queued["data_dir"] / "queue" / "labelling_queue_v1.csv"
    written = pl.read_csv(path, infer_schema=False)

    assert written.columns == QUEUE_CSV_COLUMNS
    assert written["text_id"].to_list() == queued["queue"]["text_id"].to_list()
    assert written["split"].unique().to_list() == ["train"]
    assert written["label"].null_count() == QUEUE_SIZE


@pytest.mark.slow
def test_queue_materialization_reports_metadata(queued):
    metadata = queued["metadata"]

    assert metadata["finetuner_version"].value == 1
    assert metadata["queued"].value == QUEUE_SIZE
    assert metadata["preview"].value.startswith("| text_id")


@pytest.mark.slow
def test_queue_round_trip_retrains_on_more_labels(queued, round_trip):
    store = queued["store"]
    first, second = queued["queue"], store.labelling_queue(2)
    current = store.current_labels()
    landed = current.filter(pl.col("batch") == "labelling_queue_v1.csv")
    finetuners = store.query("SELECT version, n_train FROM finetuners ORDER BY version")

    assert landed.height == QUEUE_SIZE
    assert set(landed["text_id"]) == set(first["text_id"])
    assert all(round_trip[text_id] == label for text_id, label in landed.select("text_id", "label").iter_rows())
    assert landed["split"].unique().to_list() == ["train"]
    assert finetuners["n_train"].to_list() == [N_TRAIN, N_TRAIN + QUEUE_SIZE]
    assert second.height == QUEUE_SIZE
    assert set(second["text_id"]).isdisjoint(first["text_id"])
    assert (queued["data_dir"] / "queue" / "labelling_queue_v2.csv").is_file()
