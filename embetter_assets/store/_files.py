"""The store's DuckDB file: where it lives, its storage format, and small SQL helpers.

Shared by the store and its schema, so that neither imports the other's internals.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import duckdb

PATH_VARIABLE = "EMBETTER_DUCKDB_PATH"
DATA_DIR_VARIABLE = "EMBETTER_DATA_DIR"


class StoreError(RuntimeError):
    """Raised when the store cannot accept a write as requested."""


def default_data_dir() -> Path:
    """Return the data folder from ``EMBETTER_DATA_DIR``, or ``data`` in the working directory."""
    return Path(os.environ.get(DATA_DIR_VARIABLE, "data"))


def default_store_path() -> Path:
    """Return the store path from ``EMBETTER_DUCKDB_PATH``, or ``embetter.duckdb`` in the data folder."""
    return Path(os.environ.get(PATH_VARIABLE, default_data_dir() / "embetter.duckdb"))


# New store files use the storage format of DuckDB 1.5, which later versions keep when they
# write to the file, so that the duckdb shell from the duckdb-cli package (1.5) can open them.
STORAGE_VERSION = "v1.5.0"


def _create_store_file(path: Path) -> None:
    """Create an empty DuckDB file at ``path`` in the ``STORAGE_VERSION`` format."""
    with duckdb.connect() as connection:
        connection.execute(f"ATTACH '{_sql_string(path)}' AS new_store (STORAGE_VERSION '{STORAGE_VERSION}')")
        connection.execute("DETACH new_store")


def _sql_string(path: Path) -> str:
    return str(path).replace("'", "''")


# Bytes 8 to 11 of every DuckDB database file, after the header's checksum.
_DUCKDB_MAGIC = b"DUCK"


def _check_duckdb_header(path: Path) -> None:
    """Raise ``StoreError`` when ``path`` is a non-empty file that is not a DuckDB database.

    DuckDB's own error for such a file can be misleading: it opens a path ending in ``.csv``
    or ``.parquet`` as an in-memory database and then complains about read-only mode.
    """
    if not path.is_file() or path.stat().st_size == 0:
        return
    with path.open("rb") as handle:
        header = handle.read(12)
    if header[8:12] != _DUCKDB_MAGIC:
        raise StoreError(
            f"{path} is not a DuckDB database file. Point the store at the file the pipeline writes, "
            "such as data/embetter.duckdb."
        )


def _first_row(connection: duckdb.DuckDBPyConnection, sql: str, parameters: Sequence = ()) -> tuple | None:
    """Return the first row of ``sql``, or None, consuming the whole result.

    DuckDB 2 refuses new statements on a connection while a result is partly fetched, so a
    bare ``fetchone`` would break the next statement of the same transaction.
    """
    rows = connection.execute(sql, list(parameters)).fetchall()
    return rows[0] if rows else None


def _relation_exists(connection: duckdb.DuckDBPyConnection, name: str) -> bool:
    """Tell whether a table or view called ``name`` exists, as seen inside the open transaction."""
    return _first_row(connection, "SELECT 1 FROM information_schema.tables WHERE table_name = ?", [name]) is not None

