"""Incremental work, re-materialization and bad input, through real Dagster materializations.

Texts are BBC News headlines (short real texts that encode fast) written as batch files into a
temporary data folder, stored in a real DuckDB file and encoded by the real encoder. The
encoder resource here keeps one loaded model per process instead of one per run; that is the
only difference from the production resources.
"""

import datetime
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest

from embetter_assets.definitions import ALL_ASSETS
from embetter_assets.defs.partitions import label_batches, text_batches
from embetter_assets.defs.resources import (
    DataFoldersResource,
    EncoderResource,
    StoreResource,
)
from embetter_assets.demo import load_bbc_news
from embetter_assets.encoder import SentenceEncoder, resolve_model_path
from embetter_assets.finetune import load_finetuner
from embetter_assets.ingest import content_hash
from embetter_assets.labelsets import split_labels
from embetter_assets.partition_keys import key_for_file_name
from embetter_assets.store import EmbeddingStore

FAST_FINETUNER = {"ops": {"trained_finetuner": {"config": {"n_epochs": 20, "hidden_dim": 16}}}}
OTHER_SEED = {"ops": {"trained_finetuner": {"config": {"n_epochs": 20, "hidden_dim": 16, "random_state": 1}}}}
TABLES = ("texts", "labels", "base_embeddings", "finetuners", "finetuned_embeddings")

_ENCODERS: dict[str, SentenceEncoder] = {}


class CachedEncoderResource(EncoderResource):
    """The encoder resource, with one loaded model per process shared by every run."""

    def get_encoder(self) -> SentenceEncoder:
        if self.model not in _ENCODERS:
            _ENCODERS[self.model] = SentenceEncoder(self.model, batch_size=self.batch_size, device=self.device)
        return _ENCODERS[self.model]


class PoisonedEncoder(SentenceEncoder):
    """A real encoder whose last row of every chunk is replaced by a broken vector."""

    def __init__(self, broken_row: np.ndarray | None, width: int | None = None):
        super().__init__()
        self.broken_row = broken_row
        self.width = width

    def iter_chunks(self, texts, *, chunk_size=256):
        for rows, vectors in super().iter_chunks(texts, chunk_size=chunk_size):
            if self.width is not None:
                vectors = np.ones((len(rows), self.width), dtype=np.float32)
            else:
                vectors = vectors.copy()
                vectors[-1] = self.broken_row
            yield rows, vectors


@pytest.fixture(scope="module")
def headlines() -> pl.DataFrame:
    """Distinct BBC News headlines with article id and topic, topics mixed in a fixed order."""
    articles = load_bbc_news().with_columns(pl.col("text").str.split("\n").list.first().alias("text"))
    distinct = articles.unique(subset="text", keep="first", maintain_order=True)
    return distinct.sample(fraction=1.0, shuffle=True, seed=0)


@dataclass
class Pipeline:
    """A data folder, a DuckDB store and an ephemeral Dagster instance to materialize into."""

    data_dir: Path
    instance: dg.DagsterInstance
    resources: dict

    @property
    def store(self) -> EmbeddingStore:
        return EmbeddingStore(self.data_dir / "embetter.duckdb")

    def write_texts(self, name: str, frame: pl.DataFrame) -> str:
        folder = self.data_dir / "texts"
        folder.mkdir(parents=True, exist_ok=True)
        frame.select("id", "text").write_csv(folder / name)
        return self._register(text_batches, name)

    def write_labels(self, name: str, rows: list[tuple[str, str, str]]) -> str:
        folder = self.data_dir / "labels"
        folder.mkdir(parents=True, exist_ok=True)
        frame = pl.DataFrame(rows, schema=["text_id", "label", "split"], orient="row")
        frame.write_csv(folder / name)
        return self._register(label_batches, name)

    def write_raw(self, folder: str, name: str, content: str | bytes) -> str:
        path = self.data_dir / folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
        return self._register(text_batches if folder == "texts" else label_batches, name)

    def _register(self, partitions: dg.DynamicPartitionsDefinition, name: str) -> str:
        key = key_for_file_name(name)
        if not self.instance.has_dynamic_partition(partitions.name, key):
            self.instance.add_dynamic_partitions(partitions.name, [key])
        return key

    def run(self, selection: list[str], key: str | None = None, *, raise_on_error: bool = True, **overrides):
        return dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=key,
            instance=self.instance,
            resources=self.resources | overrides.pop("resources", {}),
            run_config=overrides.pop("run_config", None),
            tags=overrides.pop("tags", None),
            raise_on_error=raise_on_error,
        )

    def count(self, table: str, where: str = "", parameters: list | None = None) -> int:
        return self.store.query(f"SELECT count(*) FROM {table} {where}", parameters)[0, 0]

    def snapshot(self) -> dict[str, pl.DataFrame]:
        """Every row of every table, for checking that a failed run changed nothing."""
        frames = {}
        for table in TABLES:
            if self.store.table_exists(table):
                frame = self.store.query(f"SELECT * FROM {table}")
                frames[table] = frame.sort(frame.columns[:3])
        return frames


def _metadata(result: dg.ExecuteInProcessResult, node: str) -> dict:
    materialization = result.asset_materializations_for_node(node)[0]
    return {key: value.value for key, value in materialization.metadata.items()}


def _failure_message(result: dg.ExecuteInProcessResult) -> str:
    assert not result.success
    return "\n".join(event.step_failure_data.error.to_string() for event in result.get_step_failure_events())


def _new_pipeline(data_dir: Path) -> Pipeline:
    resources = {
        "store": StoreResource(path=str(data_dir / "embetter.duckdb")),
        "encoder": CachedEncoderResource(),
        "folders": DataFoldersResource(root=str(data_dir)),
    }
    return Pipeline(data_dir, dg.DagsterInstance.ephemeral(), resources)


@pytest.fixture
def pipeline(tmp_path) -> Pipeline:
    return _new_pipeline(tmp_path / "data")


@pytest.fixture(scope="module")
def loaded_template(tmp_path_factory, headlines) -> Path:
    """A data folder with two text batches of 30 headlines, 5 shared under new ids, all encoded."""
    template = _new_pipeline(tmp_path_factory.mktemp("template") / "data")
    first = template.write_texts("first.csv", headlines.slice(0, 30))
    shared = headlines.slice(25, 5).with_columns(("copy-" + pl.col("id")).alias("id"))
    second = template.write_texts("second.csv", pl.concat([shared, headlines.slice(30, 25)]))
    for key in (first, second):
        template.run(["raw_texts", "base_embeddings"], key)
    return template.data_dir


@pytest.fixture
def loaded(pipeline, loaded_template) -> tuple[str, str]:
    """Copy the encoded template into this test's data folder and register its two text batches."""
    shutil.copytree(loaded_template, pipeline.data_dir)
    return pipeline._register(text_batches, "first.csv"), pipeline._register(text_batches, "second.csv")


def _label_rows(headlines: pl.DataFrame, start: int, stop: int, split: str) -> list[tuple[str, str, str]]:
    rows = headlines.slice(start, stop - start)
    return [(text_id, topic, split) for text_id, topic in zip(rows["id"], rows["topic"])]


# ----------------------------------------------------------------- incremental encoding


def test_text_in_two_batches_encoded_once(pipeline, loaded, headlines):
    first, _ = loaded

    rerun = pipeline.run(["raw_texts", "base_embeddings"], first)

    assert pipeline.count("texts") == 60
    assert pipeline.count("base_embeddings") == 55
    assert _metadata(rerun, "base_embeddings")["encoded"] == 0
    assert _metadata(rerun, "base_embeddings")["reused"] == 30


def test_model_switch_encodes_again_apart(pipeline, loaded, headlines, tmp_path):
    first, _ = loaded
    before = pipeline.store.base_embeddings(pipeline.store.texts(first)["content_hash"].to_list(), "all-MiniLM-L6-v2")
    other_model = tmp_path / "other-model"
    other_model.symlink_to(resolve_model_path("all-MiniLM-L6-v2"), target_is_directory=True)

    switched = pipeline.run(["base_embeddings"], first, resources={"encoder": CachedEncoderResource(model=str(other_model))})
    after = pipeline.store.base_embeddings(pipeline.store.texts(first)["content_hash"].to_list(), "all-MiniLM-L6-v2")
    per_model = dict(pipeline.store.query("SELECT model, count(*) FROM base_embeddings GROUP BY model").iter_rows())

    assert _metadata(switched, "base_embeddings")["encoded"] == 30
    assert per_model == {"all-MiniLM-L6-v2": 55, str(other_model): 30}
    np.testing.assert_array_equal(after, before)


def test_rematerialize_five_times_same_counts(pipeline, loaded, headlines):
    _, second = loaded
    labels = pipeline.write_labels("labels.csv", _label_rows(headlines, 0, 20, "train"))
    pipeline.run(["labelled_subset"], labels)
    loaded_at = pipeline.store.query("SELECT DISTINCT loaded_at FROM labels")["loaded_at"].to_list()

    counts = []
    for _ in range(5):
        pipeline.run(["raw_texts", "base_embeddings"], second)
        pipeline.run(["labelled_subset"], labels)
        counts.append({table: pipeline.count(table) for table in ("texts", "base_embeddings", "labels")})

    assert counts == [{"texts": 60, "base_embeddings": 55, "labels": 20}] * 5
    assert pipeline.count("texts", "WHERE batch = ?", [second]) == 30
    assert pipeline.store.query("SELECT DISTINCT loaded_at FROM labels")["loaded_at"].to_list() == loaded_at


def test_finetuned_embeddings_compute_only_missing(pipeline, loaded, headlines):
    first, second = loaded
    labels = pipeline.write_labels("labels.csv", _label_rows(headlines, 0, 40, "train"))
    pipeline.run(["labelled_subset"], labels)
    pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER)

    computed = [_metadata(pipeline.run(["finetuned_embeddings"], key), "finetuned_embeddings")["computed"] for key in (first, second)]
    again = _metadata(pipeline.run(["finetuned_embeddings"], second), "finetuned_embeddings")
    pipeline.run(["trained_finetuner"], run_config=OTHER_SEED)
    new_version = _metadata(pipeline.run(["finetuned_embeddings"], second), "finetuned_embeddings")

    assert computed == [30, 25]
    assert again["computed"] == 0
    assert new_version["finetuner_version"] == 2
    assert new_version["computed"] == 30
    per_version = dict(pipeline.store.query("SELECT finetuner_version, count(*) FROM finetuned_embeddings GROUP BY 1").iter_rows())
    assert per_version == {1: 55, 2: 30}


# ----------------------------------------------------------------- labels


def test_newer_label_batch_wins_and_counts_conflicts(pipeline, loaded, headlines):
    text_id = headlines["id"][0]
    older = pipeline.write_raw("labels", "older.csv", f"text_id,label\n{text_id},sport\n{text_id},sport\n{headlines['id'][1]},tech\n")
    newer = pipeline.write_raw("labels", "newer.csv", f"text_id,label\n{text_id},politics\n{headlines['id'][2]},tech\n")

    first_load = _metadata(pipeline.run(["labelled_subset"], older), "labelled_subset")
    second_load = _metadata(pipeline.run(["labelled_subset"], newer), "labelled_subset")
    pipeline.run(["labelled_subset"], older)
    current = pipeline.store.current_labels()

    assert first_load["duplicate_rows_dropped"] == 1
    assert first_load["labels"] == 2
    assert second_load["label_conflicts_with_other_batches"] == 1
    assert dict(zip(current["text_id"], current["label"]))[text_id] == "politics"


def test_label_batch_reports_labels_differing_in_case(pipeline, loaded, headlines):
    rows = "\n".join(f"{text_id},{label}" for text_id, label in zip(headlines["id"][:4], ["Tech", "tech", "sport", "sport"]))
    key = pipeline.write_raw("labels", "cased.csv", f"text_id,label\n{rows}\n")

    unrelated_rows = "\n".join(f"{text_id},{label}" for text_id, label in zip(headlines["id"][4:6], ["sport", "politics"]))
    unrelated = pipeline.write_raw("labels", "unrelated.csv", f"text_id,label\n{unrelated_rows}\n")

    metadata = _metadata(pipeline.run(["labelled_subset"], key), "labelled_subset")
    unrelated_metadata = _metadata(pipeline.run(["labelled_subset"], unrelated), "labelled_subset")

    assert metadata["classes_differing_only_in_case"] == [["Tech", "tech"]]
    assert metadata["classes"] == 3
    assert unrelated_metadata["classes_differing_only_in_case"] == []


def test_report_names_held_out_classes_without_training_texts(pipeline, loaded, headlines):
    rows = _label_rows(headlines, 0, 30, "train") + _label_rows(headlines, 30, 45, "test")
    rows += [(text_id, "weather", "test") for text_id in headlines["id"][45:48]]
    labels = pipeline.write_labels("labels.csv", rows)
    pipeline.run(["labelled_subset"], labels)
    pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER)

    report = _metadata(pipeline.run(["evaluation_report"]), "evaluation_report")

    assert report["held_out_classes_without_training_texts"] == ["weather"]


def test_held_out_text_never_trains(pipeline, loaded, headlines):
    train = pipeline.write_labels("train.csv", _label_rows(headlines, 0, 30, "train"))
    # The shared headlines 25-29 are held out under their copy ids in the second batch.
    copies = headlines.slice(25, 5)
    held_out = pipeline.write_labels(
        "held_out.csv", [(f"copy-{text_id}", topic, "test") for text_id, topic in zip(copies["id"], copies["topic"])]
    )
    for key in (train, held_out):
        pipeline.run(["labelled_subset"], key)

    finetuner = _metadata(pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER), "trained_finetuner")
    sets = split_labels(pipeline.store.current_labels())

    assert finetuner["train_rows_also_held_out"] == 5
    assert finetuner["train_texts"] == 25
    assert set(sets.train["content_hash"]).isdisjoint(sets.test["content_hash"])


def test_deleted_label_partition_leaves_finetune(pipeline, loaded, headlines):
    kept = pipeline.write_labels("kept.csv", _label_rows(headlines, 0, 30, "train"))
    withdrawn = pipeline.write_labels("withdrawn.csv", _label_rows(headlines, 30, 45, "train"))
    for key in (kept, withdrawn):
        pipeline.run(["labelled_subset"], key)
    with_both = _metadata(pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER), "trained_finetuner")

    pipeline.instance.delete_dynamic_partition(label_batches.name, withdrawn)
    without = _metadata(pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER), "trained_finetuner")

    assert with_both["train_texts"] == 45
    assert without["train_texts"] == 30
    assert without["withdrawn_label_rows_deleted"] == 15
    assert without["label_batches"] == [kept]
    assert pipeline.count("labels", "WHERE batch = ?", [withdrawn]) == 0


def test_nightly_rerun_reuses_unchanged_finetuner(pipeline, loaded, headlines):
    from embetter_assets.defs.schedules import build_nightly_schedule

    keys = loaded
    labels = pipeline.write_labels("labels.csv", _label_rows(headlines, 0, 40, "train"))
    pipeline.run(["labelled_subset"], labels)
    schedule = build_nightly_schedule("0 2 * * *", "UTC")
    scheduled = datetime.datetime(2025, 1, 2, 2, tzinfo=datetime.UTC)
    request = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=scheduled)).run_requests[0]

    finetuners, computed = [], []
    for _ in range(2):
        finetuners.append(
            _metadata(pipeline.run(["trained_finetuner"], run_config=FAST_FINETUNER, tags=request.tags), "trained_finetuner")
        )
        computed.append(
            sum(_metadata(pipeline.run(["finetuned_embeddings"], key), "finetuned_embeddings")["computed"] for key in keys)
        )

    per_version = dict(pipeline.store.query("SELECT finetuner_version, count(*) FROM finetuned_embeddings GROUP BY 1").iter_rows())
    assert request.run_key == "nightly-refinetune-2025-01-02T02:00:00+00:00"
    assert [metadata["version"] for metadata in finetuners] == [1, 1]
    assert [metadata["reused"] for metadata in finetuners] == [False, True]
    assert finetuners[1]["fingerprint"] == finetuners[0]["fingerprint"]
    assert computed == [55, 0]
    assert pipeline.count("finetuners") == 1
    assert per_version == {1: 55}
    assert pipeline.count("latest_finetuned_embeddings") == 55


def test_same_labels_and_seed_train_the_same_finetuner(pipeline, loaded, headlines):
    labels = pipeline.write_labels("labels.csv", _label_rows(headlines, 0, 40, "train"))
    pipeline.run(["labelled_subset"], labels)
    hashes = sorted(set(pipeline.store.texts()["content_hash"]))

    transforms = []
    # The run with another seed in between makes the third run train again rather than reuse.
    for run_config in (FAST_FINETUNER, OTHER_SEED, FAST_FINETUNER):
        pipeline.run(["trained_finetuner"], run_config=run_config)
        stored = pipeline.store.latest_finetuner()
        transforms.append(load_finetuner(stored["weights"]).transform(pipeline.store.base_embeddings(hashes, stored["model"])))

    versions = pipeline.store.query("SELECT version FROM finetuners ORDER BY version")["version"].to_list()
    assert versions == [1, 2, 3]
    np.testing.assert_allclose(transforms[2], transforms[0], rtol=1e-5, atol=1e-6)


# ----------------------------------------------------------------- bad input: an error naming file and row, nothing changed

BAD_TEXT_FILES = [
    ("columns.csv", "id,body\na,hello\n", "missing required column\\(s\\) text"),
    ("blank.csv", 'id,text\nn1,hello\nn2,""\nn3,   \n', "row\\(s\\) 2, 3: column 'text' is empty"),
    ("nulls.jsonl", '{"id": "n1", "text": "x"}\n{"id": "n2", "text": null}\n', "row\\(s\\) 2: column 'text'"),
    ("latin1.csv", b"id,text\nn1,caf\xe9\n", "line 2: invalid UTF-8"),
    ("unclosed quote.csv", 'id,text\nn1,ok\nn2,"never closed\nn3,ok\n', "quoted field starting on line 3 is never closed"),
    ("ragged.csv", "id,text\nn1,ok\nn2,one,two\n", "line 3 has 3 fields but the header has 2"),
    ("empty.csv", "", "the file is empty"),
    ("header.csv", "id,text\n", "no rows"),
    ("duplicate ids.csv", "id,text\nn1,x\nn2,y\nn1,z\n", "rows 1, 3: id 'n1' occurs more than once"),
]


@pytest.mark.parametrize(("name", "content", "message"), BAD_TEXT_FILES, ids=[case[0] for case in BAD_TEXT_FILES])
def test_bad_text_file_changes_nothing(pipeline, loaded, headlines, name, content, message):
    before = pipeline.snapshot()
    key = pipeline.write_raw("texts", name, content)

    result = pipeline.run(["raw_texts", "base_embeddings"], key, raise_on_error=False)

    error = _failure_message(result)
    after = pipeline.snapshot()
    assert name in error
    assert re.search(message, error), error
    assert after.keys() == before.keys()
    assert all(after[table].equals(frame) for table, frame in before.items())


def test_foreign_text_id_changes_nothing(pipeline, loaded, headlines):
    before = pipeline.snapshot()
    key = pipeline.write_raw("texts", "clash.csv", f"id,text\nfresh,a new text\n{headlines['id'][3]},another\n")

    error = _failure_message(pipeline.run(["raw_texts"], key, raise_on_error=False))

    assert "row 2" in error
    assert f"{headlines['id'][3]!r} is already stored in text batch 'first.csv'" in error
    assert all(pipeline.snapshot()[table].equals(frame) for table, frame in before.items())


BAD_LABEL_FILES = [
    ("unknown ids.csv", "text_id,label\n{a},sport\nnope,tech\n", "row 2 \\('nope'\\)"),
    ("one class.csv", "text_id,label\n{a},sport\n{b},sport\n", "1 class\\(es\\) \\('sport'\\)"),
    ("conflict.csv", "text_id,label\n{a},sport\n{a},tech\n{b},tech\n", "rows 1, 2: text id '{a}' has conflicting labels"),
    ("no label.csv", "text_id,tag\n{a},sport\n", "missing required column\\(s\\) label"),
    ("bad split.csv", "text_id,label,split\n{a},sport,train\n{b},tech,dev\n", "row 2: split must be 'train' or 'test'"),
    ("empty label.csv", "text_id,label\n{a},\n{b},\n", "column 'label' is empty in all 2 rows"),
    ("unlabelled rows aside.csv", "text_id,label\n{a},sport\n{b},\n", "the batch names 1 class\\(es\\) \\('sport'\\)"),
]


@pytest.mark.parametrize(("name", "template", "message"), BAD_LABEL_FILES, ids=[case[0] for case in BAD_LABEL_FILES])
def test_bad_label_file_changes_nothing(pipeline, loaded, headlines, name, template, message):
    good = pipeline.write_labels("good.csv", _label_rows(headlines, 0, 20, "train"))
    pipeline.run(["labelled_subset"], good)
    before = pipeline.snapshot()
    ids = {"a": headlines["id"][0], "b": headlines["id"][1]}
    key = pipeline.write_raw("labels", name, template.format(**ids))

    error = _failure_message(pipeline.run(["labelled_subset"], key, raise_on_error=False))

    assert name in error
    assert re.search(message.format(**ids), error), error
    assert all(pipeline.snapshot()[table].equals(frame) for table, frame in before.items())


def test_changed_file_turning_bad_keeps_stored_rows(pipeline, loaded, headlines):
    first, _ = loaded
    before = pipeline.snapshot()
    (pipeline.data_dir / "texts" / "first.csv").write_bytes(b"id,text\nn1,caf\xe9\n")

    error = _failure_message(pipeline.run(["raw_texts", "base_embeddings"], first, raise_on_error=False))

    assert "first.csv, line 2: invalid UTF-8" in error
    assert all(pipeline.snapshot()[table].equals(frame) for table, frame in before.items())
    assert pipeline.count("texts", "WHERE batch = ?", [first]) == 30


def test_quoted_line_breaks_stay_one_counted_text(pipeline):
    key = pipeline.write_raw("texts", "multiline.csv", 'id,text\nm1,"first line\nsecond line"\nm2,plain\n')

    metadata = _metadata(pipeline.run(["raw_texts"], key), "raw_texts")

    assert metadata["texts"] == 2
    assert metadata["texts_with_line_breaks"] == 1
    assert pipeline.store.texts(key)["text"].to_list() == ["first line\nsecond line", "plain"]


@pytest.mark.parametrize(
    ("broken_row", "width", "message"),
    [
        (np.full(384, np.nan, dtype=np.float32), None, "NaN or infinity"),
        (np.full(384, np.inf, dtype=np.float32), None, "NaN or infinity"),
        (np.zeros(384, dtype=np.float32), None, "all zeros"),
        (None, 100, "FLOAT\\[384\\]"),
    ],
    ids=["nan", "infinity", "zeros", "width"],
)
def test_broken_embeddings_refused_before_write(pipeline, loaded, headlines, broken_row, width, message):
    class PoisonedEncoderResource(EncoderResource):
        def get_encoder(self):
            return PoisonedEncoder(broken_row, width)

    key = pipeline.write_texts("third.csv", headlines.slice(60, 10))
    pipeline.run(["raw_texts"], key)
    before = pipeline.snapshot()

    error = _failure_message(
        pipeline.run(["base_embeddings"], key, raise_on_error=False, resources={"encoder": PoisonedEncoderResource()})
    )

    assert re.search(message, error), error
    assert pipeline.snapshot()["base_embeddings"].equals(before["base_embeddings"])


# ----------------------------------------------------------------- names and values that look like SQL


def test_hostile_names_and_values_stored_verbatim(pipeline, loaded, headlines):
    name = "x'); DROP TABLE texts; --, ünïcode….csv"
    texts = ["'; DELETE FROM texts; --", 'Robert"); DROP TABLE labels;--', "50% of ? and $1 placeholders"]
    frame = pl.DataFrame({"id": ["q'1", "q;2", "q?3"], "text": texts})
    text_key = pipeline.write_texts(name, frame)
    label_key = pipeline.write_labels(
        "labels ' OR '1'='1.csv", [("q'1", "a' OR '1'='1", "train"), ("q;2", "b); DROP TABLE labels", "train")]
    )

    pipeline.run(["raw_texts", "base_embeddings"], text_key)
    pipeline.run(["labelled_subset"], label_key)

    stored = pipeline.store.texts(text_key)
    labels = pipeline.store.query("SELECT text_id, label FROM labels WHERE batch = ? ORDER BY text_id", [label_key])
    assert text_key == key_for_file_name(name)
    assert stored["text"].to_list() == texts
    assert stored["source_file"][0].endswith(name)
    assert labels.rows() == [("q'1", "a' OR '1'='1"), ("q;2", "b); DROP TABLE labels")]
    assert pipeline.count("texts") == 63
    assert pipeline.count("base_embeddings") == 58
    assert set(pipeline.store.texts(text_key)["content_hash"]) == {content_hash(text) for text in texts}
