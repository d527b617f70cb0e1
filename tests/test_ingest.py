from pathlib import Path

import polars as pl
import pytest

from embetter_assets.ingest import InvalidBatchError, partition_key_for, read_label_batch, read_text_batch


def _write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def test_text_batch_reads_csv_parquet_and_jsonl(tmp_path):
    frame = pl.DataFrame({"id": ["a", "b"], "text": ["first", "second"]})
    frame.write_csv(tmp_path / "t.csv")
    frame.write_parquet(tmp_path / "t.parquet")
    frame.write_ndjson(tmp_path / "t.jsonl")

    for name in ["t.csv", "t.parquet", "t.jsonl"]:
        texts = read_text_batch(tmp_path / name)
        assert texts["text_id"].to_list() == ["a", "b"]
        assert texts["row_number"].to_list() == [1, 2]


def test_text_batch_rejects_numeric_parquet_text_column(tmp_path):
    pl.DataFrame({"id": ["a", "b"], "text": [1.5, 2.5]}).write_parquet(tmp_path / "scores.parquet")

    with pytest.raises(InvalidBatchError, match="scores.parquet: column 'text' contains Float64 values"):
        read_text_batch(tmp_path / "scores.parquet")


def test_text_batch_accepts_numeric_ids(tmp_path):
    pl.DataFrame({"id": [1, 2], "text": ["first", "second"]}).write_parquet(tmp_path / "t.parquet")

    assert read_text_batch(tmp_path / "t.parquet")["text_id"].to_list() == ["1", "2"]


def test_text_batch_without_id_column_gets_file_based_ids(tmp_path):
    texts = read_text_batch(_write(tmp_path / "news.csv", "text\nhello\nworld\n"))

    assert texts["text_id"].to_list() == ["news.csv:1", "news.csv:2"]


def test_text_batch_keeps_quoted_line_breaks_in_one_row(tmp_path):
    texts = read_text_batch(_write(tmp_path / "t.csv", 'id,text\na,"line one\nline two"\nb,plain\n'))

    assert texts["text"].to_list() == ["line one\nline two", "plain"]


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("empty.csv", "", "the file is empty"),
        ("header.csv", "id,text\n", "no rows"),
        ("cols.csv", "id,body\na,hello\n", "missing required column\\(s\\) text"),
        ("blank.csv", 'id,text\na,hello\nb,""\nc,   \n', "row\\(s\\) 2, 3: column 'text' is empty"),
        ("null.jsonl", '{"id": "a", "text": "x"}\n{"id": "b", "text": null}\n', "row\\(s\\) 2: column 'text'"),
        ("dupe.csv", "id,text\na,x\nb,y\na,z\n", "rows 1, 3: id 'a' occurs more than once"),
        ("latin.csv", b"id,text\na,caf\xe9\n", "line 2: invalid UTF-8"),
        ("notes.txt", "hello", "unsupported file type"),
        ("numbers.jsonl", '{"text": 6}\n{"text": 7}\n', "column 'text' contains Int64 values, expected strings"),
        ("mixed.jsonl", '{"text": "fine"}\n\n{"text": 5}\n', "row 2 \\(line 3\\): 'text' is the JSON number 5, expected a string"),
        ("object.jsonl", '{"text": "fine"}\n{"text": {"a": 1}}\n', "row 2 \\(line 2\\): 'text' is the JSON object"),
        ("array.jsonl", '{"text": ["a", "b"]}\n{"text": "fine"}\n', "row 1 \\(line 1\\): 'text' is the JSON array"),
        ("object_id.jsonl", '{"id": "a", "text": "x"}\n{"id": {"k": 1}, "text": "y"}\n', "row 2 \\(line 2\\): 'id' is the JSON object"),
        ("flag.ndjson", '{"text": "fine"}\n{"text": true}\n', "row 2 \\(line 2\\): 'text' is the JSON boolean true"),
    ],
)
def test_text_batch_rejects_bad_files_naming_file_and_row(tmp_path, name, content, message):
    path = _write(tmp_path / name, content)

    with pytest.raises(InvalidBatchError, match=message) as error:
        read_text_batch(path)
    assert name in str(error.value)


def test_label_batch_collapses_exact_duplicates_and_counts_them(tmp_path):
    path = _write(tmp_path / "l.csv", "text_id,label,split\na,x,train\na,x,train\nb,y,train\nc,x,test\n")

    labels, counts = read_label_batch(path)

    assert labels["text_id"].to_list() == ["a", "b", "c"]
    assert counts["duplicate_rows_dropped"] == 1
    assert (counts["train"], counts["test"]) == (2, 1)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("text_id,label\na,x\na,y\nb,y\n", "rows 1, 2: text id 'a' has conflicting labels"),
        ("text_id,label,split\na,x,train\nb,x,train\n", "1 class\\(es\\) \\('x'\\)"),
        ("text_id,label,split\na,x,train\nb,y,dev\n", "row 2: split must be 'train' or 'test', got 'dev'"),
        ("text_id,label,split\na,x,train\nb,y,\n", "row 2: split must be 'train' or 'test', got a blank value"),
        ("text_id,tag\na,x\n", "missing required column\\(s\\) label"),
        ("text_id,label\na,\nb,  \n", "column 'label' is empty in all 2 rows"),
        ("text_id,label,split\na,x,train\nb,,dev\nc,y,dev\n", "row 3: split must be 'train' or 'test', got 'dev'"),
        ("text_id,label\na,x\n,\n,y\n", "row\\(s\\) 3: column 'text_id' is empty"),
    ],
)
def test_label_batch_rejects_bad_files(tmp_path, content, message):
    with pytest.raises(InvalidBatchError, match=message):
        read_label_batch(_write(tmp_path / "l.csv", content))


def test_label_batch_skips_unlabelled_rows(tmp_path):
    path = _write(tmp_path / "queue.csv", "text_id,label,margin\na,x,0.1\nb,,0.2\nc,y,0.3\nd,   ,0.4\n")

    labels, counts = read_label_batch(path)

    assert labels["text_id"].to_list() == ["a", "c"]
    assert labels["row_number"].to_list() == [1, 3]
    assert counts["rows_in_file"] == 4
    assert counts["rows_without_label_skipped"] == 2
    assert counts["labels"] == 2


def test_label_batch_rejects_json_object_label(tmp_path):
    path = _write(tmp_path / "l.jsonl", '{"id": "a", "label": "x"}\n{"id": "b", "label": {"x": 1}}\n')

    with pytest.raises(InvalidBatchError, match="row 2 \\(line 2\\): 'label' is the JSON object .*expected a string or a number"):
        read_label_batch(path)


def test_label_batch_accepts_number_and_boolean_labels(tmp_path):
    path = _write(tmp_path / "l.jsonl", '{"id": "a", "label": 1}\n{"id": "b", "label": "two"}\n{"id": "c", "label": true}\n')

    labels, _ = read_label_batch(path)

    assert labels["label"].to_list() == ["1", "two", "true"]


def test_label_batch_without_split_holds_out_a_stable_fifth(tmp_path):
    rows = "\n".join(f"id{i},{'x' if i % 2 else 'y'}" for i in range(1000))
    path = _write(tmp_path / "l.csv", "id,label\n" + rows + "\n")

    first, counts = read_label_batch(path)
    second, _ = read_label_batch(path)

    assert first.equals(second)
    assert 150 < counts["test"] < 250


@pytest.mark.parametrize(
    ("name", "key"),
    [
        ("bad name.csv", "bad%20name.csv"),
        ("a,b.csv", "a%2Cb.csv"),
        ("x...csv", "x.%2E%2Ecsv"),
        ("é.csv", "%C3%A9.csv"),
        (".hidden.csv", "%2Ehidden.csv"),
        ("100%.csv", "100%25.csv"),
    ],
)
def test_partition_key_encodes_unsafe_file_names(name, key):
    assert partition_key_for(Path("data/texts") / name) == key


def test_partition_key_rejects_overlong_name_naming_file():
    name = "é" * 100 + ".csv"

    with pytest.raises(InvalidBatchError, match="Rename the file to a shorter name") as error:
        partition_key_for(Path("data/texts") / name)
    assert name in str(error.value)


def test_partition_key_is_the_file_name():
    assert partition_key_for(Path("data/texts/news_2024-01.v2.csv")) == "news_2024-01.v2.csv"


def test_json_lines_error_names_the_broken_line(tmp_path):
    lines = [f'{{"id": "t{i}", "text": "text {i}"}}' for i in range(1, 501)] + ['{"id": "bad", "text": }']
    path = _write(tmp_path / "t.jsonl", "\n".join(lines) + "\n")

    with pytest.raises(InvalidBatchError, match="line 501 is not valid JSON"):
        read_text_batch(path)
