"""The DuckDB store: every table the pipeline writes, behind parameterised SQL.

Every write runs in one transaction on a connection opened for that write only, so a
partition is replaced all at once or not at all, and readers from other processes get in
between writes. DuckDB admits one writer process per file; a connection that finds the file
locked waits and retries with backoff instead of failing.
"""

from __future__ import annotations

import json
import logging
import os
import random
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from embetter_assets.store._files import (
    StoreError,
    _check_duckdb_header,
    _create_store_file,
    _first_row,
    _relation_exists,
)
from embetter_assets.store._schema import _create_schema, _create_views, _ensure_base_table

logger = logging.getLogger(__name__)

# Waiting for the write lock: the longest single sleep and the total wait before giving up.
_MAX_BACKOFF_SECONDS = 2.0
_DEFAULT_LOCK_TIMEOUT_SECONDS = 600.0


class EmbeddingStore:
    """One DuckDB file holding texts, labels, embeddings, finetuners and reports.

    Parameters
    ----------
    path
        The DuckDB file. Its folder is created on first write.
    lock_timeout
        Seconds to keep retrying while another process has the file locked.
    """

    def __init__(self, path: str | os.PathLike, *, lock_timeout: float = _DEFAULT_LOCK_TIMEOUT_SECONDS):
        self.path = Path(path)
        self.lock_timeout = lock_timeout

    # ----------------------------------------------------------------- connections

    @contextmanager
    def connect(self, *, read_only: bool = False) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a short-lived connection, waiting while another process holds the lock."""
        if read_only and not self.path.exists():
            raise StoreError(f"The store {self.path} does not exist yet; materialize the assets first.")
        _check_duckdb_header(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        connection = self._open_with_retry(read_only)
        try:
            yield connection
        finally:
            connection.close()

    def _open_with_retry(self, read_only: bool) -> duckdb.DuckDBPyConnection:
        deadline = time.monotonic() + self.lock_timeout
        delay = 0.05
        while True:
            try:
                if not read_only and not self.path.exists():
                    _create_store_file(self.path)
                return duckdb.connect(str(self.path), read_only=read_only)
            except duckdb.IOException as error:
                if "lock" not in str(error).lower() or time.monotonic() > deadline:
                    raise
                logger.debug("Store %s is locked by another process; retrying in %.2f s", self.path, delay)
                time.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, _MAX_BACKOFF_SECONDS)

    @contextmanager
    def transaction(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """Open a write connection with the schema in place, committing only on success."""
        with self.connect() as connection:
            connection.execute("BEGIN TRANSACTION")
            try:
                _create_schema(connection)
                yield connection
            except BaseException:
                connection.execute("ROLLBACK")
                raise
            connection.execute("COMMIT")

    def query(self, sql: str, parameters: Sequence | None = None) -> pl.DataFrame:
        """Run a read-only query and return the result as a polars frame."""
        with self.connect(read_only=True) as connection:
            return connection.sql(sql, params=list(parameters or [])).pl()

    def table_exists(self, name: str) -> bool:
        """Tell whether the store file exists and has the table ``name``."""
        if not self.path.exists():
            return False
        found = self.query(
            "SELECT count(*) AS n FROM information_schema.tables WHERE table_name = ?", [name]
        )
        return found["n"][0] > 0

    # ----------------------------------------------------------------- texts

    def replace_text_batch(self, batch: str, texts: pl.DataFrame) -> int:
        """Replace every row of text batch ``batch`` with ``texts`` in one transaction.

        ``texts`` has the columns ``text_id``, ``row_number``, ``content_hash``, ``text`` and
        ``source_file``. A text id already stored under another batch is rejected, because
        labels refer to texts by id and must not become ambiguous. Returns the number of
        labelled texts that the new version of the batch no longer contains: their labels
        stay stored but no longer train or evaluate anything until the text comes back.
        """
        with self.transaction() as connection:
            connection.register("incoming_texts", texts.to_arrow())
            clash = _first_row(
                connection,
                """
                SELECT incoming.text_id, incoming.row_number, stored.batch
                FROM incoming_texts AS incoming JOIN texts AS stored USING (text_id)
                WHERE stored.batch <> ?
                ORDER BY incoming.row_number LIMIT 1
                """,
                [batch],
            )
            if clash is not None:
                text_id, row_number, other_batch = clash
                raise StoreError(
                    f"Text batch {batch!r}, row {row_number}: text id {text_id!r} is already stored in "
                    f"text batch {other_batch!r}. Text ids must be unique across batches."
                )
            orphaned = _first_row(
                connection,
                """
                SELECT count(DISTINCT l.text_id)
                FROM labels AS l JOIN texts AS t USING (text_id)
                WHERE t.batch = ? AND l.text_id NOT IN (SELECT text_id FROM incoming_texts)
                """,
                [batch],
            )[0]
            connection.execute("DELETE FROM texts WHERE batch = ?", [batch])
            connection.execute(
                """
                INSERT INTO texts (text_id, batch, row_number, content_hash, text, source_file)
                SELECT text_id, ?, row_number, content_hash, text, source_file FROM incoming_texts
                """,
                [batch],
            )
        return int(orphaned)

    def texts(self, batch: str | None = None) -> pl.DataFrame:
        """Return the stored texts, of one batch or of all, in batch and row order."""
        if batch is None:
            return self.query("SELECT * FROM texts ORDER BY batch, row_number")
        return self.query("SELECT * FROM texts WHERE batch = ? ORDER BY row_number", [batch])

    # ----------------------------------------------------------------- base embeddings

    def texts_missing_base_embedding(self, batch: str, model: str) -> pl.DataFrame:
        """Return one row per distinct content hash of ``batch`` not yet encoded by ``model``."""
        if not self.table_exists("base_embeddings"):
            return self.query(
                "SELECT content_hash, any_value(text) AS text FROM texts WHERE batch = ? "
                "GROUP BY content_hash ORDER BY content_hash",
                [batch],
            )
        return self.query(
            """
            SELECT t.content_hash, any_value(t.text) AS text
            FROM texts AS t
            LEFT JOIN base_embeddings AS e ON e.content_hash = t.content_hash AND e.model = ?
            WHERE t.batch = ? AND e.content_hash IS NULL
            GROUP BY t.content_hash ORDER BY t.content_hash
            """,
            [model, batch],
        )

    def add_base_embeddings(self, model: str, content_hashes: Sequence[str], embeddings: np.ndarray) -> int:
        """Store ``embeddings`` for ``content_hashes`` under ``model``; return rows written.

        Pairs already stored are left as they are, so a retried or parallel run writes
        nothing twice. The table's width is fixed by the first model stored.
        """
        _check_embeddings(embeddings, len(content_hashes), "base embeddings")
        width = embeddings.shape[1]
        with self.transaction() as connection:
            _ensure_base_table(connection, width)
            connection.register("incoming_embeddings", _embedding_table(content_hashes, embeddings))
            before = _first_row(connection, "SELECT count(*) FROM base_embeddings")[0]
            connection.execute(
                f"""
                INSERT INTO base_embeddings (content_hash, model, embedding)
                SELECT content_hash, ?, embedding::FLOAT[{width}] FROM incoming_embeddings
                ON CONFLICT DO NOTHING
                """,
                [model],
            )
            after = _first_row(connection, "SELECT count(*) FROM base_embeddings")[0]
        return after - before

    def base_embeddings(self, content_hashes: Sequence[str], model: str) -> np.ndarray:
        """Return the stored base embeddings of ``content_hashes``, in that order."""
        return self._embeddings_for(
            "SELECT content_hash, embedding FROM base_embeddings WHERE model = ?", [model], content_hashes
        )

    # ----------------------------------------------------------------- labels

    def replace_label_batch(self, batch: str, labels: pl.DataFrame) -> dict[str, int]:
        """Replace every row of label batch ``batch`` with ``labels`` in one transaction.

        ``labels`` has the columns ``text_id``, ``label``, ``split``, ``row_number`` and
        ``source_file``. Every text id must already be stored in ``texts``.

        A batch keeps the load time of its first load, so re-loading an older batch (after
        its file changed, or a retried run) does not make its labels override a newer batch's.
        Returns counts for metadata: ``replaced_rows`` (rows of the previous load of this
        batch), ``texts_in_other_label_batches`` and ``label_conflicts_with_other_batches``
        (texts that another batch labels differently).
        """
        with self.transaction() as connection:
            connection.register("incoming_labels", labels.to_arrow())
            unknown = connection.execute(
                """
                SELECT incoming.text_id, incoming.row_number
                FROM incoming_labels AS incoming ANTI JOIN texts USING (text_id)
                ORDER BY incoming.row_number
                """
            ).fetchall()
            if unknown:
                shown = ", ".join(f"row {row} ({text_id!r})" for text_id, row in unknown[:5])
                source = labels["source_file"][0] if "source_file" in labels.columns and labels.height else batch
                raise StoreError(
                    f"Label batch {batch!r} ({source}): {len(unknown)} text ids are not in any text batch, "
                    f"first {shown}. Materialize the text batch that holds them first, or fix the ids."
                )
            replaced_rows, first_loaded_at = _first_row(
                connection, "SELECT count(*), min(loaded_at) FROM labels WHERE batch = ?", [batch]
            )
            overlap, conflicts = _first_row(
                connection,
                """
                SELECT count(DISTINCT incoming.text_id),
                       count(DISTINCT incoming.text_id) FILTER (WHERE stored.label <> incoming.label)
                FROM incoming_labels AS incoming JOIN labels AS stored USING (text_id)
                WHERE stored.batch <> ?
                """,
                [batch],
            )
            connection.execute("DELETE FROM labels WHERE batch = ?", [batch])
            connection.execute(
                """
                INSERT INTO labels (batch, text_id, label, split, row_number, source_file, loaded_at)
                SELECT ?, text_id, label, split, row_number, source_file, coalesce(?::TIMESTAMPTZ, current_timestamp)
                FROM incoming_labels
                """,
                [batch, first_loaded_at],
            )
        return {
            "replaced_rows": int(replaced_rows),
            "texts_in_other_label_batches": int(overlap),
            "label_conflicts_with_other_batches": int(conflicts),
        }

    def delete_label_batches(self, batches: Sequence[str]) -> dict[str, int]:
        """Delete every label of ``batches`` in one transaction; return the rows deleted per batch."""
        if not batches:
            return {}
        with self.transaction() as connection:
            counted = connection.execute(
                "SELECT batch, count(*) FROM labels WHERE list_contains(?, batch) GROUP BY batch ORDER BY batch",
                [list(batches)],
            ).fetchall()
            connection.execute("DELETE FROM labels WHERE list_contains(?, batch)", [list(batches)])
        return {batch: int(count) for batch, count in counted}

    def current_labels(self) -> pl.DataFrame:
        """Return one label per text: the one from the newest batch, by time of first load.

        Columns: ``text_id``, ``content_hash``, ``label``, ``split``, ``batch``. Rows come in
        the order the labels arrived: batch by load time, then row by row within a batch.
        """
        return self.query(
            """
            SELECT l.text_id, t.content_hash, l.label, l.split, l.label_batch AS batch
            FROM current_labels AS l JOIN texts AS t USING (text_id)
            ORDER BY l.loaded_at, l.label_batch, l.row_number
            """
        )

    # ----------------------------------------------------------------- finetuners

    def add_finetuner(
        self,
        *,
        kind: str,
        params: dict,
        model: str,
        input_dim: int,
        output_dim: int,
        classes: list,
        n_train: int,
        label_batches: list[str],
        weights: bytes,
        fingerprint: str | None = None,
    ) -> int:
        """Store a trained finetuner as the next version and return that version number.

        ``fingerprint`` identifies the training inputs, so that a run with the same inputs can
        find this version and reuse it. The views are recreated in the same transaction, so
        that they show this version.
        """
        with self.transaction() as connection:
            # Stores written before fingerprints existed get the column on their next finetuner.
            connection.execute("ALTER TABLE finetuners ADD COLUMN IF NOT EXISTS fingerprint VARCHAR")
            version = _first_row(connection, "SELECT coalesce(max(version), 0) + 1 FROM finetuners")[0]
            connection.execute(
                """
                INSERT INTO finetuners
                    (version, kind, params, model, input_dim, output_dim, classes, n_train, label_batches, weights,
                     fingerprint)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    version,
                    kind,
                    json.dumps(params, sort_keys=True),
                    model,
                    input_dim,
                    output_dim,
                    json.dumps([_json_label(label) for label in classes]),
                    n_train,
                    json.dumps(label_batches),
                    weights,
                    fingerprint,
                ],
            )
            _create_views(connection)
        return int(version)

    def latest_finetuner(self, *, missing_ok: bool = False) -> dict | None:
        """Return the newest finetuner row as a dict, weights included.

        With none stored, raise ``StoreError``, or return None when ``missing_ok`` is true.
        """
        frame = None
        if self.table_exists("finetuners"):
            frame = self.query("SELECT * FROM finetuners ORDER BY version DESC LIMIT 1")
        if frame is None or frame.height == 0:
            if missing_ok:
                return None
            raise StoreError("No finetuner is stored yet; materialize trained_finetuner first.")
        return frame.row(0, named=True)

    # ----------------------------------------------------------------- finetuned embeddings

    def texts_missing_finetuned_embedding(self, batch: str, version: int) -> pl.DataFrame:
        """Return the content hashes of ``batch`` that have no embedding from finetuner ``version``."""
        return self.query(
            """
            SELECT DISTINCT t.content_hash
            FROM texts AS t
            LEFT JOIN finetuned_embeddings AS f ON f.content_hash = t.content_hash AND f.finetuner_version = ?
            WHERE t.batch = ? AND f.content_hash IS NULL
            ORDER BY t.content_hash
            """,
            [version, batch],
        )

    def add_finetuned_embeddings(self, version: int, content_hashes: Sequence[str], embeddings: np.ndarray) -> int:
        """Store finetuned ``embeddings`` of ``content_hashes`` under ``version``; return rows written."""
        _check_embeddings(embeddings, len(content_hashes), "finetuned embeddings")
        with self.transaction() as connection:
            _check_finetuned_width(connection, version, embeddings)
            connection.register("incoming_embeddings", _embedding_table(content_hashes, embeddings))
            before = _first_row(connection, "SELECT count(*) FROM finetuned_embeddings")[0]
            connection.execute(
                """
                INSERT INTO finetuned_embeddings (content_hash, finetuner_version, embedding)
                SELECT content_hash, ?, embedding FROM incoming_embeddings
                ON CONFLICT DO NOTHING
                """,
                [version],
            )
            after = _first_row(connection, "SELECT count(*) FROM finetuned_embeddings")[0]
        return after - before

    def finetuned_embeddings(self, content_hashes: Sequence[str], version: int) -> np.ndarray:
        """Return the embeddings of ``content_hashes`` from finetuner ``version``, in that order."""
        return self._embeddings_for(
            "SELECT content_hash, embedding FROM finetuned_embeddings WHERE finetuner_version = ?",
            [version],
            content_hashes,
        )

    # ----------------------------------------------------------------- reports

    def add_report(
        self,
        version: int,
        *,
        metrics: pl.DataFrame,
        learning_curve: pl.DataFrame,
        charts: dict[str, str],
        summary: dict,
    ) -> None:
        """Replace the report of finetuner ``version`` in one transaction.

        ``metrics`` has the columns ``space``, ``metric`` and ``value``; ``learning_curve``
        has ``n_labels``, ``space`` and ``accuracy``; ``summary`` has the columns of
        ``evaluation_summaries`` other than the version and the timestamp.
        """
        with self.transaction() as connection:
            connection.register("incoming_metrics", metrics.to_arrow())
            connection.register("incoming_curve", learning_curve.to_arrow())
            for table in ("evaluation_reports", "learning_curves", "report_charts", "evaluation_summaries"):
                connection.execute(f"DELETE FROM {table} WHERE finetuner_version = ?", [version])
            connection.execute(
                """
                INSERT INTO evaluation_reports (finetuner_version, space, metric, value)
                SELECT ?, space, metric, value FROM incoming_metrics
                """,
                [version],
            )
            connection.execute(
                """
                INSERT INTO learning_curves (finetuner_version, n_labels, space, accuracy)
                SELECT ?, n_labels, space, accuracy FROM incoming_curve
                """,
                [version],
            )
            connection.executemany(
                "INSERT INTO report_charts (finetuner_version, chart, path) VALUES (?, ?, ?)",
                [[version, name, path] for name, path in charts.items()],
            )
            connection.execute(
                """
                INSERT INTO evaluation_summaries
                    (finetuner_version, kind, recommended_space, recommendation, train_texts, test_texts, page_path)
                VALUES (?, ?, ?, ?, ?, ?, ?)
                """,
                [
                    version,
                    summary["kind"],
                    summary["recommended_space"],
                    summary["recommendation"],
                    summary["train_texts"],
                    summary["test_texts"],
                    summary["page_path"],
                ],
            )

    # ----------------------------------------------------------------- labelling queue

    def unlabelled_texts(self) -> pl.DataFrame:
        """Return one row per distinct text content that has no current label under any id.

        Columns: ``text_id`` (the smallest id with that content), ``content_hash`` and
        ``text``, in text id order. A text whose copy under another id is labelled counts as
        labelled, because labelling it again would teach nothing new.
        """
        return self.query(
            """
            WITH labelled AS (
                SELECT DISTINCT t.content_hash FROM current_labels JOIN texts AS t USING (text_id)
            )
            SELECT min(text_id) AS text_id, content_hash, any_value(text) AS text
            FROM texts ANTI JOIN labelled USING (content_hash)
            GROUP BY content_hash
            ORDER BY text_id
            """
        )

    def finetuned_content_hashes(self, version: int) -> pl.Series:
        """Return the content hashes that have an embedding from finetuner ``version``."""
        return self.query(
            "SELECT content_hash FROM finetuned_embeddings WHERE finetuner_version = ? ORDER BY content_hash",
            [version],
        )["content_hash"]

    def replace_labelling_queue(self, version: int, queue: pl.DataFrame) -> None:
        """Replace the labelling queue of finetuner ``version`` with ``queue``, in its row order.

        ``queue`` has the columns ``text_id``, ``content_hash``, ``predicted_label`` and
        ``margin``; its first row gets rank 1.
        """
        ranked = queue.select("text_id", "content_hash", "predicted_label", "margin").with_row_index("rank", offset=1)
        with self.transaction() as connection:
            connection.register("incoming_queue", ranked.to_arrow())
            connection.execute("DELETE FROM labelling_queue WHERE finetuner_version = ?", [version])
            connection.execute(
                """
                INSERT INTO labelling_queue (finetuner_version, rank, text_id, content_hash, predicted_label, margin)
                SELECT ?, rank, text_id, content_hash, predicted_label, margin FROM incoming_queue
                """,
                [version],
            )

    def labelling_queue(self, version: int | None = None) -> pl.DataFrame:
        """Return the labelling queue of finetuner ``version`` (default: the newest queue), by rank.

        Columns: ``finetuner_version``, ``rank``, ``text_id``, ``predicted_label``, ``margin``
        and ``text``.
        """
        return self.query(
            """
            SELECT q.finetuner_version, q.rank, q.text_id, q.predicted_label, q.margin, t.text
            FROM labelling_queue AS q LEFT JOIN texts AS t USING (text_id)
            WHERE q.finetuner_version = coalesce(?, (SELECT max(finetuner_version) FROM labelling_queue))
            ORDER BY q.rank
            """,
            [version],
        )

    # ----------------------------------------------------------------- similarity search

    def search_space(self, space: str) -> dict:
        """Describe the vectors that ``nearest_texts`` searches in ``space`` (``base`` or ``finetuned``).

        Returns ``model`` (the encoder a query must be embedded with), ``width`` and
        ``finetuner_version`` (None for ``base``). For ``finetuned`` it also returns the
        newest finetuner's ``weights``, to carry a query into that space.
        """
        with self.connect(read_only=True) as connection:
            return _describe_space(connection, self.path, space)

    def nearest_texts(self, query: np.ndarray, k: int, space: str) -> pl.DataFrame:
        """Return the ``k`` stored texts whose embedding in ``space`` is most cosine-similar to ``query``.

        The search runs in DuckDB with ``array_cosine_similarity`` over ``latest_base_embeddings``
        or ``latest_finetuned_embeddings``, so ``query`` must come from the model or finetuner
        that ``search_space`` names. Columns: ``text_id``, ``score``, ``label`` (null when
        unlabelled) and ``text``, best first; ties go by text id.
        """
        if k < 1:
            raise ValueError(f"k must be at least 1, got {k}.")
        vector = np.asarray(query, dtype=np.float32).ravel()
        with self.connect(read_only=True) as connection:
            width = _describe_space(connection, self.path, space)["width"]
            if vector.shape[0] != width:
                raise StoreError(f"The query has {vector.shape[0]} dimensions but the {space} embeddings have {width}.")
            view = {"base": "latest_base_embeddings", "finetuned": "latest_finetuned_embeddings"}[space]
            # Rank distinct contents first, so the text payload is only joined to k rows. The
            # k best text ids are always among the k best contents.
            return connection.sql(
                f"""
                WITH nearest AS (
                    SELECT content_hash, array_cosine_similarity(embedding, ?::FLOAT[{int(width)}]) AS score
                    FROM {view}
                    WHERE content_hash IN (SELECT content_hash FROM texts)
                    ORDER BY score DESC, content_hash
                    LIMIT ?
                )
                SELECT t.text_id, n.score, l.label, t.text
                FROM nearest AS n
                JOIN texts AS t USING (content_hash)
                LEFT JOIN current_labels AS l USING (text_id)
                ORDER BY n.score DESC, t.text_id
                LIMIT ?
                """,
                params=[vector.tolist(), k, k],
            ).pl()

    def count_texts_without_embedding(self, space: str) -> int:
        """Count the stored texts that ``nearest_texts`` cannot find, having no embedding in ``space``."""
        view = {"base": "latest_base_embeddings", "finetuned": "latest_finetuned_embeddings"}[space]
        return int(
            self.query(
                f"SELECT count(*) AS n FROM texts WHERE content_hash NOT IN (SELECT content_hash FROM {view})"
            )["n"][0]
        )

    # ----------------------------------------------------------------- helpers

    def _embeddings_for(self, sql: str, parameters: list, content_hashes: Sequence[str]) -> np.ndarray:
        wanted = pa.table(
            {
                "content_hash": pa.array(list(content_hashes), pa.string()),
                "position": pa.array(np.arange(len(content_hashes), dtype=np.int64)),
            }
        )
        with self.connect(read_only=True) as connection:
            connection.register("wanted_hashes", wanted)
            result = connection.sql(
                f"""
                WITH stored AS ({sql})
                SELECT w.content_hash, s.embedding
                FROM wanted_hashes AS w LEFT JOIN stored AS s USING (content_hash)
                ORDER BY w.position
                """,
                params=parameters,
            ).to_arrow_table()
        column = result.column("embedding").combine_chunks()
        if column.null_count:
            missing = result.column("content_hash").filter(column.is_null())[0]
            raise StoreError(f"No stored embedding for content hash {missing}; materialize its batch first.")
        return _to_matrix(column)


def _check_finetuned_width(connection: duckdb.DuckDBPyConnection, version: int, embeddings: np.ndarray) -> None:
    """Reject vectors whose width differs from the stored finetuner's ``output_dim``.

    ``latest_finetuned_embeddings`` casts every vector of a version to that width, so one
    wrong-sized row would break every query on the view. Versions with no stored finetuner
    row are not checked.
    """
    expected = _first_row(connection, "SELECT output_dim FROM finetuners WHERE version = ?", [version])
    if expected is not None and embeddings.shape[0] and embeddings.shape[1] != expected[0]:
        raise StoreError(
            f"Finetuned embeddings of {embeddings.shape[1]} dimensions do not fit finetuner version {version}, "
            f"whose output_dim is {expected[0]}. Embed with that version's stored weights."
        )


def _describe_space(connection: duckdb.DuckDBPyConnection, path: Path, space: str) -> dict:
    """Return what ``EmbeddingStore.search_space`` returns, read on an open connection."""
    if space == "base":
        if not _relation_exists(connection, "base_embeddings"):
            raise StoreError(f"The store {path} has no base embeddings yet; materialize base_embeddings first.")
        if not _relation_exists(connection, "latest_base_embeddings"):
            raise StoreError(
                f"The store {path} was written before the view latest_base_embeddings existed; "
                "materialize trained_finetuner to add it."
            )
        found = _first_row(connection, "SELECT model, array_length(embedding) FROM latest_base_embeddings LIMIT 1")
        if found is None:
            raise StoreError(f"The store {path} has no base embeddings yet; materialize base_embeddings first.")
        return {"space": space, "model": found[0], "width": int(found[1]), "finetuner_version": None}
    if space == "finetuned":
        stored = None
        if _relation_exists(connection, "finetuners"):
            stored = _first_row(
                connection, "SELECT version, model, output_dim, weights FROM finetuners ORDER BY version DESC LIMIT 1"
            )
        if stored is None:
            raise StoreError(f"The store {path} has no finetuner yet; materialize trained_finetuner first.")
        version, model, width, weights = stored
        return {"space": space, "model": model, "width": int(width), "finetuner_version": int(version), "weights": weights}
    raise ValueError(f"Unknown embedding space {space!r}; use 'base' or 'finetuned'.")


def _to_matrix(column: pa.Array) -> np.ndarray:
    if len(column) == 0:
        return np.zeros((0, 0), dtype=np.float32)
    values = np.array(column.flatten().to_numpy(zero_copy_only=False), dtype=np.float32)
    return values.reshape(len(column), -1)


def _embedding_table(content_hashes: Sequence[str], embeddings: np.ndarray) -> pa.Table:
    flat = pa.array(np.ascontiguousarray(embeddings, dtype=np.float32).ravel())
    lists = pa.FixedSizeListArray.from_arrays(flat, embeddings.shape[1])
    return pa.table({"content_hash": pa.array(list(content_hashes), pa.string()), "embedding": lists})


def _check_embeddings(embeddings: np.ndarray, n_rows: int, what: str) -> None:
    """Reject embeddings that would poison every later similarity query."""
    if embeddings.ndim != 2 or embeddings.shape[0] != n_rows:
        raise StoreError(f"Refusing {what}: expected {n_rows} rows, got an array of shape {embeddings.shape}.")
    if n_rows == 0:
        return
    finite = np.isfinite(embeddings).all(axis=1)
    if not finite.all():
        row = int(np.flatnonzero(~finite)[0])
        raise StoreError(f"Refusing {what}: row {row} contains NaN or infinity.")
    zero = ~np.any(embeddings, axis=1)
    if zero.any():
        row = int(np.flatnonzero(zero)[0])
        raise StoreError(f"Refusing {what}: row {row} is all zeros.")


def _json_label(label):
    return label.item() if isinstance(label, np.generic) else label
