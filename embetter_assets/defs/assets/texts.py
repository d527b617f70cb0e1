"""Text batches and their base sentence embeddings."""

import time

import dagster as dg

from embetter_assets.defs.metadata import markdown_table
from embetter_assets.defs.partitions import text_batches
from embetter_assets.defs.resources import DataFoldersResource, EncoderResource, StoreResource
from embetter_assets.ingest import read_text_batch

# Texts encoded and written per store transaction; a crash loses at most one chunk of work.
# Each write opens the DuckDB file and checkpoints it on close, about 60 ms in all (measured on
# a 2-core CPU), so chunks of 1,024 keep writing near 2% of encoding at about 190 tweets/s.
ENCODE_CHUNK_SIZE = 1024


@dg.asset(
    partitions_def=text_batches,
    group_name="texts",
    kinds={"duckdb", "polars"},
    description="The texts of one batch file in `data/texts/`, validated and stored in the `texts` table.",
)
def raw_texts(
    context: dg.AssetExecutionContext, store: StoreResource, folders: DataFoldersResource
) -> dg.MaterializeResult:
    path = folders.text_file(context.partition_key)
    frame = read_text_batch(path)
    orphaned = store.get_store().replace_text_batch(context.partition_key, frame)
    if orphaned:
        context.log.warning(
            f"{orphaned} labelled texts of batch {context.partition_key!r} are not in {path} any more; their "
            "labels stay stored but leave training and evaluation until the texts come back."
        )

    lengths = frame["text"].str.len_chars()
    preview = frame.select("text_id", frame["text"].str.slice(0, 80).alias("text")).head(5)
    context.log.info(f"Stored {frame.height} texts from {path}")
    return dg.MaterializeResult(
        metadata={
            "source_file": dg.MetadataValue.path(str(path)),
            "texts": frame.height,
            "labelled_texts_removed": orphaned,
            "distinct_texts": frame["content_hash"].n_unique(),
            "mean_characters": float(lengths.mean()),
            "max_characters": int(lengths.max()),
            # A quoted CSV field may contain line breaks. Such a text stays one text and is counted here.
            "texts_with_line_breaks": int(frame["text"].str.contains("\n", literal=True).sum()),
            "preview": dg.MetadataValue.md(markdown_table(preview.rows(), preview.columns)),
        }
    )


@dg.asset(
    partitions_def=text_batches,
    deps=[raw_texts],
    group_name="texts",
    kinds={"duckdb", "pytorch"},
    description=(
        "Sentence embeddings of one text batch, in `base_embeddings` keyed by (content hash, model). "
        "Only texts whose pair is not stored yet are encoded."
    ),
)
def base_embeddings(
    context: dg.AssetExecutionContext, store: StoreResource, encoder: EncoderResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    batch = context.partition_key
    missing = embedding_store.texts_missing_base_embedding(batch, encoder.model)
    n_batch = embedding_store.query(
        "SELECT count(DISTINCT content_hash) AS n FROM texts WHERE batch = ?", [batch]
    )["n"][0]
    context.log.info(
        f"Text batch {batch!r}: {n_batch} distinct texts, {missing.height} to encode with {encoder.model}"
    )

    sentence_encoder = encoder.get_encoder()
    # Loads the model before the clock starts, so texts_per_second measures encoding and storing only.
    dimension = sentence_encoder.dimension
    hashes = missing["content_hash"].to_list()
    started = time.perf_counter()
    written = done = 0
    for rows, vectors in sentence_encoder.iter_chunks(missing["text"].to_list(), chunk_size=ENCODE_CHUNK_SIZE):
        written += embedding_store.add_base_embeddings(encoder.model, [hashes[row] for row in rows], vectors)
        done += len(rows)
        rate = done / max(time.perf_counter() - started, 1e-9)
        context.log.info(
            f"Encoded {done} of {missing.height} texts ({rate:.1f} texts/s, about "
            f"{(missing.height - done) / rate:.0f} s left)"
        )

    seconds = time.perf_counter() - started
    return dg.MaterializeResult(
        metadata={
            "model": encoder.model,
            "texts_in_batch": int(n_batch),
            "encoded": missing.height,
            "reused": int(n_batch) - missing.height,
            "rows_written": written,
            "dimension": dimension,
            "encode_seconds": round(seconds, 2),
            "texts_per_second": round(missing.height / seconds, 1) if missing.height else 0.0,
        }
    )

