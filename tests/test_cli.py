"""The ``embetter-assets similar`` command, run on a small real store."""

import shutil
import subprocess
import sys
from pathlib import Path

import dagster as dg
import numpy as np
import polars as pl
import pytest
from bbc_slice import materialize_slice, text_rows, write_bbc_slice

from embetter_assets.cli import format_neighbours, main
from embetter_assets.ingest import content_hash
from embetter_assets.store import EmbeddingStore


@pytest.fixture(scope="module")
def store_path(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("data")
    articles = write_bbc_slice(data_dir, per_topic=8, n_train=20, n_test=10)
    materialize_slice(data_dir, dg.DagsterInstance.ephemeral())
    return data_dir / "embetter.duckdb", articles


def _rows(output: str) -> list[list[str]]:
    """Split the printed table into rows of (text_id, score, label-or-text...) words, header excluded."""
    lines = output.strip().splitlines()
    return [line.split() for line in lines[2:]]


@pytest.mark.slow
@pytest.mark.parametrize("space", ["base", "finetuned"])
def test_similar_finds_the_stored_text_first(store_path, capsys, space):
    path, articles = store_path
    text = articles.filter(articles["id"] == "bbc-sports-001")["text"][0]

    status = main(["similar", text, "-k", "5", "--space", space, "--db", str(path)])

    output = capsys.readouterr().out
    rows = _rows(output)
    assert status == 0
    assert output.startswith(f"5 nearest texts in the {space} space")
    assert output.splitlines()[1].split() == ["text_id", "score", "label", "text"]
    assert len(rows) == 5
    assert rows[0][0] == "bbc-sports-001"
    assert float(rows[0][1]) == pytest.approx(1.0, abs=1e-3)
    assert [float(row[1]) for row in rows] == sorted((float(row[1]) for row in rows), reverse=True)


@pytest.mark.slow
def test_similar_new_text_finds_its_topic(store_path, capsys):
    path, _ = store_path

    status = main(["similar", "The striker scored twice as the club won the cup final", "-k", "3", "--db", str(path)])

    rows = _rows(capsys.readouterr().out)
    assert status == 0
    assert len(rows) == 3
    assert rows[0][0].startswith("bbc-sports-")


@pytest.mark.slow
def test_similar_shows_labels_of_labelled_texts(store_path, capsys):
    path, _ = store_path
    store = EmbeddingStore(path)
    labelled = store.current_labels().row(0, named=True)
    text = store.query("SELECT text FROM texts WHERE text_id = ?", [labelled["text_id"]])["text"][0]

    main(["similar", text, "-k", "1", "--space", "base", "--db", str(path)])

    row = _rows(capsys.readouterr().out)[0]
    assert row[0] == labelled["text_id"]
    assert row[2] == labelled["label"]


def test_similar_reports_missing_store_in_one_line(tmp_path, capsys):
    missing = tmp_path / "nowhere.duckdb"

    status = main(["similar", "anything", "--db", str(missing)])

    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1
    assert str(missing) in error
    assert "make run" in error


def test_similar_rejects_folder_as_store(tmp_path, capsys):
    status = main(["similar", "anything", "--db", str(tmp_path)])

    error = capsys.readouterr().err
    assert status == 2
    assert "is a folder, not a DuckDB file" in error
    assert str(tmp_path / "embetter.duckdb") in error


def test_similar_reports_store_without_finetuner(tmp_path, capsys):
    store = EmbeddingStore(tmp_path / "store.duckdb")
    store.add_base_embeddings("all-MiniLM-L6-v2", [content_hash("a text")], np.ones((1, 384), dtype=np.float32))

    status = main(["similar", "anything", "--space", "finetuned", "--db", str(store.path)])

    error = capsys.readouterr().err
    assert status == 2
    assert error.count("\n") == 1
    assert f"The store {store.path} has no finetuner yet" in error


@pytest.mark.parametrize("name", ["labels.csv", "texts.parquet", "notes.duckdb"])
def test_similar_rejects_non_duckdb_file(tmp_path, capsys, name):
    path = tmp_path / name
    path.write_text("text_id,label\na,x\n")

    status = main(["similar", "anything", "--db", str(path)])

    error = capsys.readouterr().err
    assert status == 2
    assert f"{path} is not a DuckDB database file" in error


@pytest.mark.slow
def test_similar_counts_unsearched_texts(tmp_path, capsys):
    from embetter_assets.encoder import DEFAULT_MODEL

    store = EmbeddingStore(tmp_path / "store.duckdb")
    texts = ["The striker scored twice", "Parliament passed the budget"]
    store.replace_text_batch("t.csv", text_rows("t.csv", ["a", "b"], texts))
    store.add_base_embeddings(DEFAULT_MODEL, [content_hash(texts[0])], np.ones((1, 384), dtype=np.float32))

    status = main(["similar", "football", "--space", "base", "--db", str(store.path)])

    output = capsys.readouterr().out
    assert status == 0
    assert "1 stored texts have no embedding in this space yet and were not searched" in output
    assert "materialize base_embeddings" in output


@pytest.mark.parametrize("k", ["0", "-3", "ten"])
def test_similar_rejects_k_below_one(capsys, k):
    with pytest.raises(SystemExit) as exit_info:
        main(["similar", "anything", "-k", k])

    assert exit_info.value.code == 2
    assert "argument -k" in capsys.readouterr().err


def test_format_neighbours_aligns_and_shortens():
    table = format_neighbours(
        pl.DataFrame(
            {"text_id": ["a", "longer-id"], "score": [0.91234, 0.5], "label": ["sport", None], "text": ["x " * 100, "line\nbreak"]}
        )
    )

    lines = table.splitlines()
    assert lines[1].startswith("a          0.9123  sport  x x")
    assert lines[1].endswith("...")
    assert lines[2] == "longer-id  0.5000         line break"


def test_console_script_is_installed(tmp_path):
    script = shutil.which("embetter-assets", path=str(Path(sys.executable).parent))
    if script is None:
        pytest.skip("the embetter-assets console script is not installed; run pip install -e .")

    result = subprocess.run([script, "similar", "anything", "--db", str(tmp_path / "none.duckdb")], capture_output=True, text=True, timeout=120)

    assert result.returncode == 2
    assert result.stderr.startswith("embetter-assets: error: Store")


# ----------------------------------------------------------------- build


@pytest.fixture
def build_data_dir(tmp_path, monkeypatch):
    """A data folder containing a small BBC slice, with the Dagster home and the store inside tmp_path."""
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster_home"))
    monkeypatch.delenv("EMBETTER_DUCKDB_PATH", raising=False)
    data_dir = tmp_path / "data"
    write_bbc_slice(data_dir, per_topic=5, n_train=12, n_test=8)
    return data_dir


@pytest.mark.slow
def test_build_materializes_batch_files_then_reuses(build_data_dir, capsys):
    data_dir = build_data_dir
    (data_dir / "texts" / ".notes.csv").write_text("text\nignored\n")
    (data_dir / "texts" / "notes.txt").write_text("ignored\n")

    first_status = main(["build", "--data-dir", str(data_dir)])
    first = capsys.readouterr()
    second_status = main(["build", "--data-dir", str(data_dir)])
    second = capsys.readouterr()

    assert first_status == 0
    assert "Finetuner version 1 (feedforward), trained on" in first.out
    assert f"Skipping {data_dir / 'texts' / 'notes.txt'}: unsupported file type" in first.err
    assert ".notes.csv" not in first.err
    assert second_status == 0
    assert "reused: labels and settings unchanged" in second.out
    assert EmbeddingStore(data_dir / "embetter.duckdb").query("SELECT count(*) AS n FROM finetuners")["n"][0] == 1


def test_build_without_label_files_names_the_folder(tmp_path, capsys):
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "t.csv").write_text("text\nhello\n")

    status = main(["build", "--data-dir", str(tmp_path)])

    error = capsys.readouterr().err
    assert status == 2
    assert f"No label file (text_id, label, optionally split) in {tmp_path / 'labels'}" in error


@pytest.mark.slow
def test_build_reports_bad_label_file_in_one_line(build_data_dir, capsys):
    data_dir = build_data_dir
    (data_dir / "labels" / "bad.csv").write_text("text_id,label,split\nbbc-sport-001,sport,maybe\n")

    status = main(["build", "--data-dir", str(data_dir), "--log-level", "WARNING"])

    error_lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("embetter-assets: error:")]
    assert status == 2
    assert len(error_lines) == 1
    assert "bad.csv, row 1: split must be 'train' or 'test', got 'maybe'" in error_lines[0]
