"""The store's tables and views, created on the first write and kept up to date on later ones."""

from __future__ import annotations

import duckdb

from embetter_assets.store._files import StoreError, _first_row, _relation_exists


def _ensure_base_table(connection: duckdb.DuckDBPyConnection, width: int) -> None:
    stored = _first_row(
        connection,
        """
        SELECT data_type FROM information_schema.columns
        WHERE table_name = 'base_embeddings' AND column_name = 'embedding'
        """,
    )
    if stored is None:
        connection.execute(
            f"""
            CREATE TABLE base_embeddings (
                content_hash VARCHAR NOT NULL,
                model VARCHAR NOT NULL,
                embedding FLOAT[{int(width)}] NOT NULL,
                created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
                PRIMARY KEY (content_hash, model)
            )
            """
        )
    elif stored[0] != f"FLOAT[{width}]":
        raise StoreError(
            f"base_embeddings stores {stored[0]} vectors but the encoder returns {width} dimensions. "
            "Use a separate store file (EMBETTER_DUCKDB_PATH) for a model of another width."
        )
    # A store written before latest_base_embeddings existed gets the current views here.
    if stored is None or not _relation_exists(connection, "latest_base_embeddings"):
        _create_views(connection)


def _create_schema(connection: duckdb.DuckDBPyConnection) -> None:
    connection.execute(
        """
        CREATE TABLE IF NOT EXISTS texts (
            text_id VARCHAR PRIMARY KEY,
            batch VARCHAR NOT NULL,
            row_number INTEGER NOT NULL,
            content_hash VARCHAR NOT NULL,
            text VARCHAR NOT NULL,
            source_file VARCHAR,
            loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE IF NOT EXISTS labels (
            batch VARCHAR NOT NULL,
            text_id VARCHAR NOT NULL,
            label VARCHAR NOT NULL,
            split VARCHAR NOT NULL CHECK (split IN ('train', 'test')),
            row_number INTEGER NOT NULL,
            source_file VARCHAR,
            loaded_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (batch, text_id)
        );
        CREATE TABLE IF NOT EXISTS finetuners (
            version INTEGER PRIMARY KEY,
            kind VARCHAR NOT NULL,
            params JSON NOT NULL,
            model VARCHAR NOT NULL,
            input_dim INTEGER NOT NULL,
            output_dim INTEGER NOT NULL,
            classes JSON NOT NULL,
            n_train INTEGER NOT NULL,
            label_batches JSON NOT NULL,
            weights BLOB NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            fingerprint VARCHAR
        );
        CREATE TABLE IF NOT EXISTS finetuned_embeddings (
            content_hash VARCHAR NOT NULL,
            finetuner_version INTEGER NOT NULL,
            embedding FLOAT[] NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (content_hash, finetuner_version)
        );
        CREATE TABLE IF NOT EXISTS evaluation_reports (
            finetuner_version INTEGER NOT NULL,
            space VARCHAR NOT NULL,
            metric VARCHAR NOT NULL,
            value DOUBLE,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (finetuner_version, space, metric)
        );
        CREATE TABLE IF NOT EXISTS report_charts (
            finetuner_version INTEGER NOT NULL,
            chart VARCHAR NOT NULL,
            path VARCHAR NOT NULL,
            PRIMARY KEY (finetuner_version, chart)
        );
        CREATE TABLE IF NOT EXISTS evaluation_summaries (
            finetuner_version INTEGER PRIMARY KEY,
            kind VARCHAR NOT NULL,
            recommended_space VARCHAR NOT NULL,
            recommendation VARCHAR NOT NULL,
            train_texts INTEGER NOT NULL,
            test_texts INTEGER NOT NULL,
            page_path VARCHAR NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp
        );
        CREATE TABLE IF NOT EXISTS learning_curves (
            finetuner_version INTEGER NOT NULL,
            n_labels INTEGER NOT NULL,
            space VARCHAR NOT NULL,
            accuracy DOUBLE NOT NULL,
            PRIMARY KEY (finetuner_version, n_labels, space)
        );
        CREATE TABLE IF NOT EXISTS labelling_queue (
            finetuner_version INTEGER NOT NULL,
            rank INTEGER NOT NULL,
            text_id VARCHAR NOT NULL,
            content_hash VARCHAR NOT NULL,
            predicted_label VARCHAR NOT NULL,
            margin DOUBLE NOT NULL,
            created_at TIMESTAMPTZ NOT NULL DEFAULT current_timestamp,
            PRIMARY KEY (finetuner_version, rank)
        );
        CREATE OR REPLACE VIEW current_labels AS
        SELECT text_id, label, split, batch AS label_batch, row_number, loaded_at
        FROM labels
        QUALIFY row_number() OVER (PARTITION BY text_id ORDER BY loaded_at DESC, batch DESC) = 1;
        """
    )


def _create_views(connection: duckdb.DuckDBPyConnection) -> None:
    """(Re)create the views users query: each text with its label and latest embeddings.

    ``latest_base_embeddings`` keeps the vectors of one model: the model of the newest
    finetuner or, before any finetuner, the model stored most recently. So each text has at
    most one row there even when several models share the table.

    ``latest_finetuned_embeddings`` keeps the newest finetuner's vectors cast to
    ``FLOAT[output_dim]``, so that ``array_cosine_similarity`` accepts them. The version and
    the width are written into the view's SQL, which is why storing a finetuner recreates it.
    """
    latest = _first_row(connection, "SELECT version, output_dim FROM finetuners ORDER BY version DESC LIMIT 1")
    if latest is None:
        finetuned_sql = "SELECT content_hash, finetuner_version, embedding FROM finetuned_embeddings WHERE false"
    else:
        version, width = int(latest[0]), int(latest[1])
        finetuned_sql = (
            f"SELECT content_hash, finetuner_version, embedding::FLOAT[{width}] AS embedding "
            f"FROM finetuned_embeddings WHERE finetuner_version = {version}"
        )
    connection.execute(f"CREATE OR REPLACE VIEW latest_finetuned_embeddings AS {finetuned_sql}")

    if not _relation_exists(connection, "base_embeddings"):
        return
    connection.execute(
        """
        CREATE OR REPLACE VIEW latest_base_embeddings AS
        SELECT content_hash, model, embedding
        FROM base_embeddings
        WHERE model = coalesce(
            (SELECT model FROM finetuners ORDER BY version DESC LIMIT 1),
            (SELECT model FROM base_embeddings ORDER BY created_at DESC, model LIMIT 1)
        );

        CREATE OR REPLACE VIEW text_embeddings AS
        SELECT
            t.text_id, t.batch, t.content_hash, t.text, l.label, l.split,
            b.model, b.embedding AS base_embedding,
            f.finetuner_version, f.embedding AS finetuned_embedding
        FROM texts AS t
        LEFT JOIN current_labels AS l USING (text_id)
        LEFT JOIN latest_base_embeddings AS b USING (content_hash)
        LEFT JOIN latest_finetuned_embeddings AS f USING (content_hash);
        """
    )

