"""Read and validate text and label files before anything reaches the store.

A text file has a ``text`` column and optionally an ``id`` column; a label file has
``text_id`` (or ``id``), ``label`` and optionally ``split`` (``train`` or ``test``). Files
are CSV, Parquet or JSON Lines. Every problem is raised as an :class:`InvalidBatchError`
that names the file, the row (counted from 1, header excluded) or column, and the problem.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path

import polars as pl

from embetter_assets.partition_keys import PartitionKeyError, key_for_file_name

SUPPORTED_SUFFIXES = (".csv", ".parquet", ".jsonl", ".ndjson")

# Share of a label batch held out for evaluation when the file has no ``split`` column.
DEFAULT_TEST_FRACTION = 0.2


class InvalidBatchError(ValueError):
    """Raised when a text or label file cannot be loaded as it is."""


def content_hash(text: str) -> str:
    """Return the SHA-256 hex digest of ``text`` encoded as UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def partition_key_for(path: Path) -> str:
    """Return the partition key of a batch file: its file name, percent-encoded where unsafe.

    The key is the full file name (``news.csv``), so two files that differ only in their
    extension stay apart. Characters that Dagster or a URL could misread (spaces, commas,
    ``...``, non-ASCII letters) are percent-encoded reversibly, see
    :mod:`embetter_assets.partition_keys`; a name whose key would be too long is rejected.
    """
    try:
        return key_for_file_name(Path(path).name)
    except PartitionKeyError as error:
        raise InvalidBatchError(f"{path}: {error}") from error


def read_table(path: Path) -> pl.DataFrame:
    """Read a CSV, Parquet or JSON Lines file with every column as polars infers it."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise InvalidBatchError(f"{path}: unsupported file type {suffix!r}; use one of {', '.join(SUPPORTED_SUFFIXES)}.")
    if not path.is_file():
        raise InvalidBatchError(f"{path}: file not found.")
    if path.stat().st_size == 0:
        raise InvalidBatchError(f"{path}: the file is empty.")
    if suffix != ".parquet":
        _check_utf8(path)
    try:
        if suffix == ".csv":
            frame = pl.read_csv(path, infer_schema=False, raise_if_empty=True)
        elif suffix == ".parquet":
            frame = pl.read_parquet(path)
        else:
            frame = pl.read_ndjson(path, infer_schema_length=None)
    except (pl.exceptions.PolarsError, OSError) as error:
        problem = None
        if suffix == ".csv":
            problem = _csv_problem(path)
        elif suffix != ".parquet":
            problem = _json_lines_problem(path)
        # polars appends tuning hints (schema inference, ignore_errors) that do not apply here.
        detail = problem or str(error).strip().splitlines()[0]
        raise InvalidBatchError(f"{path}: could not be parsed as {suffix[1:]}: {detail}") from error
    if frame.height == 0:
        raise InvalidBatchError(f"{path}: the file has a header but no rows.")
    return frame


def read_text_batch(path: Path) -> pl.DataFrame:
    """Load a text file as rows ready for the ``texts`` table.

    Returns the columns ``text_id``, ``row_number``, ``content_hash``, ``text`` and
    ``source_file``. Without an ``id`` column, ids are ``<file name>:<row>``.
    """
    path = Path(path)
    frame = read_table(path)
    _require_columns(path, frame, ["text"])
    _reject_json_lines_values(path, frame, {"text": _TEXT, "id": _ID_OR_LABEL})
    texts = _text_column(path, frame)
    _reject_blank(path, texts, "text")

    if "id" in frame.columns:
        ids = _string_column(path, frame, "id")
        _reject_blank(path, ids, "id")
        _reject_duplicates(path, ids, "id")
    else:
        ids = pl.Series("id", [f"{path.name}:{row}" for row in range(1, frame.height + 1)])

    return pl.DataFrame(
        {
            "text_id": ids,
            "row_number": pl.int_range(1, frame.height + 1, eager=True).cast(pl.Int32),
            "content_hash": [content_hash(text) for text in texts],
            "text": texts,
            "source_file": [str(path)] * frame.height,
        }
    )


def read_label_batch(path: Path, *, test_fraction: float = DEFAULT_TEST_FRACTION) -> tuple[pl.DataFrame, dict]:
    """Load a label file as rows ready for the ``labels`` table, with counts for metadata.

    Rows with an empty label are skipped and counted, so a labelling queue filled in part can
    be loaded as it is. A file with no label at all is rejected. Exact duplicate rows collapse
    into one and are counted. The same text id with two different labels in one file is
    rejected, because neither can be trusted. A batch that names fewer than two classes is
    rejected, because one class alone can neither train nor evaluate a finetuner. A batch of
    held-out rows only is fine. Without a ``split`` column, a deterministic ``test_fraction``
    of the texts (chosen by a hash of the text id) is held out.
    """
    path = Path(path)
    frame = read_table(path)
    id_column = "text_id" if "text_id" in frame.columns else "id"
    _require_columns(path, frame, [id_column, "label"])
    _reject_json_lines_values(path, frame, {id_column: _ID_OR_LABEL, "label": _ID_OR_LABEL})

    all_labels = _string_column(path, frame, "label")
    labelled = ~_is_blank(all_labels)
    if not labelled.any():
        raise InvalidBatchError(
            f"{path}: column 'label' is empty in all {frame.height} rows. Fill in the label of at least "
            "the rows you have labelled; rows left empty are skipped."
        )
    row_numbers = pl.int_range(1, frame.height + 1, eager=True).cast(pl.Int32).filter(labelled)
    frame = frame.filter(labelled)
    ids = _string_column(path, frame, id_column)
    labels = all_labels.filter(labelled)
    _reject_blank(path, ids, id_column, row_numbers)
    if "split" in frame.columns:
        splits = _string_column(path, frame, "split").str.strip_chars().str.to_lowercase()
        bad = splits.is_null() | ~splits.is_in(["train", "test"])
        if bad.any():
            position = int(bad.arg_true()[0])
            value = frame["split"][position]
            found = "a blank value" if value is None or not str(value).strip() else repr(value)
            raise InvalidBatchError(
                f"{path}, row {row_numbers[position]}: split must be 'train' or 'test', got {found}."
            )
    else:
        splits = pl.Series([_default_split(text_id, test_fraction) for text_id in ids])

    rows = pl.DataFrame(
        {
            "text_id": ids,
            "label": labels.str.strip_chars(),
            "split": splits,
            "row_number": row_numbers,
        }
    )
    deduplicated = rows.unique(subset=["text_id", "label", "split"], keep="first", maintain_order=True)
    conflicting = deduplicated.filter(pl.col("text_id").is_duplicated())
    if conflicting.height:
        first = conflicting.row(0, named=True)
        other_rows = conflicting.filter(pl.col("text_id") == first["text_id"])["row_number"].to_list()
        raise InvalidBatchError(
            f"{path}, rows {', '.join(map(str, other_rows))}: text id {first['text_id']!r} has conflicting "
            "labels or splits in the same file. Keep one row per text id."
        )

    classes = deduplicated["label"].unique().sort()
    if classes.len() < 2:
        found = ", ".join(repr(label) for label in classes.to_list())
        raise InvalidBatchError(
            f"{path}: the batch names {classes.len()} class(es) ({found}) in column 'label'; a label batch, "
            "held-out rows included, needs at least two classes to train or evaluate a finetuner. Add rows "
            "of another class."
        )

    counts = {
        "rows_in_file": int(labelled.len()),
        "rows_without_label_skipped": int((~labelled).sum()),
        "labels": deduplicated.height,
        "duplicate_rows_dropped": frame.height - deduplicated.height,
        "train": int((deduplicated["split"] == "train").sum()),
        "test": int((deduplicated["split"] == "test").sum()),
    }
    return deduplicated.with_columns(pl.lit(str(path)).alias("source_file")), counts


def _default_split(text_id: str, test_fraction: float) -> str:
    bucket = int(hashlib.sha256(text_id.encode("utf-8")).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "test" if bucket < test_fraction else "train"


def _text_column(path: Path, frame: pl.DataFrame) -> pl.Series:
    """Return the ``text`` column, rejecting numbers or booleans where texts belong.

    An id or a label may be a number, but a text column of numbers means the file contains
    something else. A JSON Lines column mixing strings with other types, which polars turns
    into strings, is checked line by line before (``_reject_json_lines_values``).
    """
    series = frame["text"]
    if series.dtype.is_numeric() or series.dtype == pl.Boolean:
        raise InvalidBatchError(
            f"{path}: column 'text' contains {series.dtype} values, expected strings. Put the texts "
            "themselves in the 'text' column."
        )
    return _string_column(path, frame, "text")


_JSON_TYPE_NAMES = {bool: "boolean", int: "number", float: "number", dict: "object", list: "array"}


_TEXT = ((str,), "a string")
_ID_OR_LABEL = ((str, int, float, bool), "a string or a number")


def _reject_json_lines_values(path: Path, frame: pl.DataFrame, rules: dict[str, tuple[tuple, str]]) -> None:
    """Raise for the first JSON Lines row where a column of ``rules`` contains a JSON type it does not allow.

    ``rules`` maps a column to the Python types it allows and their description for the
    message. One pass over the file checks every column. Only columns polars read as strings
    are checked, because a column of a single other type is already visible in its dtype.
    Null and missing values pass: the blank checks name those.
    """
    if path.suffix.lower() not in (".jsonl", ".ndjson"):
        return
    rules = {column: rule for column, rule in rules.items() if column in frame.columns and frame[column].dtype == pl.String}
    if not rules:
        return
    row = 0
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            row += 1
            record = json.loads(line)
            for column, (allowed, expected) in rules.items():
                value = record.get(column)
                if value is None or _json_value_allowed(value, allowed):
                    continue
                raise InvalidBatchError(
                    f"{path}, row {row} (line {line_number}): {column!r} is the JSON "
                    f"{_JSON_TYPE_NAMES[type(value)]} {json.dumps(value)[:60]}, expected {expected}. Quote it if "
                    "it is meant as text."
                )


def _json_lines_problem(path: Path) -> str | None:
    """Describe the first line of a JSON Lines file that is not one JSON object, or return None."""
    with path.open(encoding="utf-8") as handle:
        for line_number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as error:
                return f"line {line_number} is not valid JSON ({error.msg} at column {error.colno})."
            if not isinstance(value, dict):
                return f"line {line_number} holds a JSON {type(value).__name__}, not an object."
    return None


def _csv_problem(path: Path) -> str | None:
    """Describe the first structural problem of a CSV file, with its line, or return None.

    Finds an unterminated quoted field (which swallows every later line) and a row with
    more or fewer fields than the header; polars reports neither with a line number.
    """
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.reader(handle, strict=True)
        line = 1
        try:
            header = next(reader, [])
            for row in reader:
                if len(row) != len(header):
                    return (
                        f"line {line + 1} has {len(row)} fields but the header has {len(header)}. Quote fields "
                        "that contain commas."
                    )
                line = reader.line_num
        except csv.Error as error:
            return (
                f"a quoted field starting on line {line + 1} is never closed ({error}). Close the quote, or "
                "double every quote character inside a quoted field (\"\")."
            )
    return None


def _check_utf8(path: Path) -> None:
    with path.open("rb") as handle:
        for line_number, line in enumerate(handle, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                raise InvalidBatchError(
                    f"{path}, line {line_number}: invalid UTF-8 byte {line[error.start:error.start + 1]!r} "
                    f"at column {error.start + 1}. Re-save the file as UTF-8."
                ) from error


def _require_columns(path: Path, frame: pl.DataFrame, required: list[str]) -> None:
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InvalidBatchError(
            f"{path}: missing required column(s) {', '.join(missing)}; found {', '.join(frame.columns)}."
        )


def _string_column(path: Path, frame: pl.DataFrame, column: str) -> pl.Series:
    series = frame[column]
    if series.dtype == pl.String:
        return series
    if series.dtype.is_numeric() or series.dtype == pl.Boolean or series.dtype == pl.Null:
        return series.cast(pl.String)
    raise InvalidBatchError(f"{path}: column {column!r} must hold strings, found {series.dtype}.")


def _json_value_allowed(value, allowed: tuple) -> bool:
    # bool is a subclass of int in Python, so a boolean passes only when bool itself is allowed.
    if isinstance(value, bool):
        return bool in allowed
    return isinstance(value, allowed)


def _is_blank(series: pl.Series) -> pl.Series:
    return series.is_null() | (series.str.strip_chars().str.len_chars() == 0)


def _reject_blank(path: Path, series: pl.Series, column: str, row_numbers: pl.Series | None = None) -> None:
    """Raise naming the rows where ``column`` is empty; ``row_numbers`` maps positions to file rows."""
    blank = _is_blank(series)
    if blank.any():
        rows = (row_numbers.filter(blank) if row_numbers is not None else blank.arg_true() + 1).to_list()
        shown = ", ".join(map(str, rows[:10])) + (" ..." if len(rows) > 10 else "")
        raise InvalidBatchError(f"{path}, row(s) {shown}: column {column!r} is empty or null ({len(rows)} rows).")


def _reject_duplicates(path: Path, series: pl.Series, column: str) -> None:
    duplicated = series.is_duplicated()
    if duplicated.any():
        value = series.filter(duplicated)[0]
        rows = (series.eq(value).arg_true() + 1).to_list()
        raise InvalidBatchError(
            f"{path}, rows {', '.join(map(str, rows))}: {column} {value!r} occurs more than once; ids must be unique."
        )
