"""Every SQL block of the README's "Querying with SQL" section runs as written, and the views match their description there."""

import re
import subprocess
import sys
from pathlib import Path

import dagster as dg
import duckdb
import numpy as np
import polars as pl
import pytest
from bbc_slice import materialize_slice, text_rows, write_bbc_slice

from embetter_assets.store import EmbeddingStore, StoreError

README = Path(__file__).resolve().parents[1] / "README.md"
SECTION_TITLE = "## Querying with SQL"


def _section_sql_blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    start = text.index(SECTION_TITLE)
    end = text.find("\n## ", start + len(SECTION_TITLE))
    section = text[start : end if end != -1 else len(text)]
    return re.findall(r"```sql\n(.*?)```", section, flags=re.DOTALL)


SQL_BLOCKS = _section_sql_blocks()


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    write_bbc_slice(data_dir, per_topic=8, n_train=20, n_test=10)
    materialize_slice(data_dir, dg.DagsterInstance.ephemeral(), queue_config={"size": 5})
    return data_dir / "embetter.duckdb"


def test_readme_has_the_documented_queries():
    joined = "\n".join(SQL_BLOCKS)

    assert len(SQL_BLOCKS) >= 4
    assert "array_cosine_similarity" in joined
    assert "current_labels" in joined
    assert "FORMAT parquet" in joined


@pytest.mark.slow
@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[f"block{number}" for number in range(1, len(SQL_BLOCKS) + 1)])
def test_readme_query_returns_rows(store_path, tmp_path, monkeypatch, sql):
    monkeypatch.chdir(tmp_path)

    with duckdb.connect(str(store_path), read_only=True) as connection:
        rows = connection.execute(sql).fetchall()

    assert rows
    for target in re.findall(r"\bTO '([^']+)'", sql):
        assert pl.read_parquet(tmp_path / target).height > 0


@pytest.mark.slow
@pytest.mark.parametrize("sql", SQL_BLOCKS, ids=[f"block{number}" for number in range(1, len(SQL_BLOCKS) + 1)])
def test_readme_query_runs_in_installed_duckdb_shell(store_path, tmp_path, sql):
    shell = Path(sys.executable).parent / "duckdb"
    assert shell.exists(), f"{shell} is missing; the duckdb-cli package installs it (make install)."

    result = subprocess.run(
        [str(shell), "-readonly", "-csv", str(store_path), sql], cwd=tmp_path, capture_output=True, text=True, timeout=120
    )

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert len(result.stdout.strip().splitlines()) > 1 or "TO '" in sql


@pytest.mark.slow
def test_readme_neighbour_query_ranks_by_score(store_path):
    neighbours = next(sql for sql in SQL_BLOCKS if "array_cosine_similarity" in sql)

    with duckdb.connect(str(store_path), read_only=True) as connection:
        rows = connection.execute(neighbours).fetchall()

    scores = [row[2] for row in rows]
    assert len(rows) == 10
    assert scores == sorted(scores, reverse=True)
    assert "bbc-sports-001" not in [row[0] for row in rows]


@pytest.mark.slow
def test_readme_export_holds_one_row_per_text(store_path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    export = next(sql for sql in SQL_BLOCKS if sql.lstrip().startswith("COPY"))

    with duckdb.connect(str(store_path), read_only=True) as connection:
        connection.execute(export)
        n_texts = connection.execute("SELECT count(*) FROM texts").fetchall()[0][0]
        width = connection.execute("SELECT max_by(output_dim, version) FROM finetuners").fetchall()[0][0]
    exported = pl.read_parquet(tmp_path / "finetuned_embeddings.parquet")

    assert exported.height == n_texts
    assert exported["finetuned_embedding"].list.len().unique().to_list() == [width]


# ----------------------------------------------------------------- the views behind the queries


def _store_with_texts(tmp_path) -> EmbeddingStore:
    store = EmbeddingStore(tmp_path / "store.duckdb")
    texts = ["first text", "second text"]
    store.replace_text_batch("a.csv", text_rows("a.csv", ["t1", "t2"], texts))
    return store


def _add_finetuner(store: EmbeddingStore, model: str, output_dim: int) -> int:
    return store.add_finetuner(
        kind="feedforward", params={}, model=model, input_dim=384, output_dim=output_dim,
        classes=["x", "y"], n_train=2, label_batches=["l.csv"], weights=b"unused",
    )


def test_text_embeddings_shows_one_model_per_text(tmp_path):
    store = _store_with_texts(tmp_path)
    hashes = store.texts()["content_hash"].to_list()
    store.add_base_embeddings("model-a", hashes, np.ones((2, 384), dtype=np.float32))
    store.add_base_embeddings("model-b", hashes, np.full((2, 384), 2.0, dtype=np.float32))

    before_finetuner = store.query("SELECT text_id, model FROM text_embeddings ORDER BY text_id")
    _add_finetuner(store, "model-a", 8)
    after_finetuner = store.query("SELECT text_id, model FROM text_embeddings ORDER BY text_id")

    assert before_finetuner.rows() == [("t1", "model-b"), ("t2", "model-b")]
    assert after_finetuner.rows() == [("t1", "model-a"), ("t2", "model-a")]


def test_finetuned_view_uses_newest_width(tmp_path):
    store = _store_with_texts(tmp_path)
    hashes = store.texts()["content_hash"].to_list()
    store.add_base_embeddings("m", hashes, np.ones((2, 384), dtype=np.float32))
    rng = np.random.default_rng(0)
    for output_dim in (8, 4):
        version = _add_finetuner(store, "m", output_dim)
        store.add_finetuned_embeddings(version, hashes, rng.normal(size=(2, output_dim)).astype(np.float32))

    described = dict(store.query("SELECT column_name, column_type FROM (DESCRIBE text_embeddings)").iter_rows())
    scores = store.query(
        "SELECT finetuner_version, array_cosine_similarity(finetuned_embedding, finetuned_embedding) AS score "
        "FROM text_embeddings"
    )

    assert described["finetuned_embedding"] == "FLOAT[4]"
    assert described["base_embedding"] == "FLOAT[384]"
    assert scores["finetuner_version"].to_list() == [2, 2]
    assert scores["score"].to_list() == pytest.approx([1.0, 1.0])


def test_store_rejects_finetuned_width_unlike_finetuner(tmp_path):
    store = _store_with_texts(tmp_path)
    version = _add_finetuner(store, "m", 8)

    with pytest.raises(StoreError, match="6 dimensions do not fit finetuner version 1, whose output_dim is 8"):
        store.add_finetuned_embeddings(version, ["h"], np.ones((1, 6), dtype=np.float32))
