"""The labelling queue: unlabelled texts worth labelling next, as a table and a CSV to fill in."""

from pathlib import Path

import dagster as dg
import polars as pl
from pydantic import Field

from embetter_assets.defs.assets.finetuner import finetuned_embeddings, trained_finetuner
from embetter_assets.defs.metadata import markdown_table
from embetter_assets.defs.resources import DataFoldersResource, StoreResource
from embetter_assets.labelsets import split_labels
from embetter_assets.queue import DEFAULT_POOL_FACTOR, DEFAULT_QUEUE_SIZE, select_for_labelling, write_queue_csv

# Folder of the queue CSVs, under the data folder. It must stay outside labels/, because the
# label sensor loads every file there as a label batch, and a queue with blank labels fails.
QUEUE_FOLDER = "queue"


class QueueConfig(dg.Config):
    """Run configuration of ``labelling_queue``."""

    size: int = Field(default=DEFAULT_QUEUE_SIZE, ge=1, description="Texts in the queue.")
    pool_factor: int = Field(
        default=DEFAULT_POOL_FACTOR,
        ge=1,
        description=(
            "The size * pool_factor least-sure texts are clustered into size groups and the least-sure text "
            "of each group is queued. Larger spreads the queue wider; 1 queues the least-sure texts as they are."
        ),
    )
    random_state: int = Field(default=0, description="Seed of the classifier and the clustering.")


def queue_csv_path(folders: DataFoldersResource, version: int) -> Path:
    """Return the CSV file of the queue for finetuner ``version``."""
    return Path(folders.root) / QUEUE_FOLDER / f"labelling_queue_v{version}.csv"


@dg.asset(
    deps=[trained_finetuner, finetuned_embeddings],
    group_name="labelling",
    kinds={"duckdb", "scikit-learn"},
    description=(
        "Unlabelled texts to label next, for the newest finetuner: those a logistic regression on the "
        "finetuned space is least sure about, one per cluster so that near-duplicates are not queued "
        "together. Stored in `labelling_queue` and written to `data/queue/labelling_queue_v<version>.csv` "
        "(text_id, label, split, text) with the label column empty; a filled-in copy dropped into "
        "`data/labels/` loads as a new label batch."
    ),
)
def labelling_queue(
    context: dg.AssetExecutionContext, config: QueueConfig, store: StoreResource, folders: DataFoldersResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    version = int(embedding_store.latest_finetuner()["version"])
    embedded = embedding_store.finetuned_content_hashes(version).implode()

    train = split_labels(embedding_store.current_labels()).train
    candidates = embedding_store.unlabelled_texts()
    usable_train = train.filter(pl.col("content_hash").is_in(embedded))
    usable_candidates = candidates.filter(pl.col("content_hash").is_in(embedded))
    skipped = (train.height - usable_train.height) + (candidates.height - usable_candidates.height)
    if skipped:
        context.log.warning(
            f"{skipped} texts have no embedding from finetuner version {version} and are left out; "
            "materialize finetuned_embeddings for every text batch to include them."
        )

    if usable_train["label"].n_unique() < 2:
        raise ValueError(
            f"labelling_queue needs training texts of at least two classes with an embedding from finetuner "
            f"version {version}; found {usable_train.height} such texts of {train.height}. Materialize "
            "finetuned_embeddings for every text batch first."
        )
    X_train = embedding_store.finetuned_embeddings(usable_train["content_hash"].to_list(), version)
    X_candidates = embedding_store.finetuned_embeddings(usable_candidates["content_hash"].to_list(), version)
    selection = select_for_labelling(
        X_train,
        usable_train["label"].to_numpy(),
        X_candidates,
        size=config.size,
        pool_factor=config.pool_factor,
        random_state=config.random_state,
    )
    queue = usable_candidates[selection.positions].with_columns(
        pl.Series("predicted_label", selection.predicted_labels, dtype=pl.String),
        pl.Series("margin", selection.margins, dtype=pl.Float64),
    )
    # The CSV goes first: it raises when a filled-in file would be overwritten, and the table stays as it was.
    path = write_queue_csv(queue, queue_csv_path(folders, version))
    embedding_store.replace_labelling_queue(version, queue)
    context.log.info(
        f"Queued {queue.height} of {usable_candidates.height} unlabelled texts for finetuner version {version} "
        f"(pool of {selection.pool_size} least-sure texts); fill in {path} and copy it into {folders.labels_dir}"
    )
    return dg.MaterializeResult(metadata=_metadata(queue, usable_candidates.height, selection.pool_size, version, path))


def _metadata(queue: pl.DataFrame, n_unlabelled: int, pool_size: int, version: int, path: Path) -> dict:
    preview = queue.select(
        "text_id", "predicted_label", pl.col("margin").round(3), pl.col("text").str.slice(0, 80).str.replace_all(r"\s+", " ")
    ).head(10)
    per_class = queue.group_by("predicted_label").len().sort("predicted_label")
    return {
        "finetuner_version": version,
        "queued": queue.height,
        "unlabelled_texts": n_unlabelled,
        "pool_size": pool_size,
        "median_margin": float(queue["margin"].median()) if queue.height else float("nan"),
        "queued_per_predicted_label": dg.MetadataValue.json(dict(per_class.iter_rows())),
        "preview": dg.MetadataValue.md(markdown_table(preview.rows(), preview.columns)),
        "csv": dg.MetadataValue.path(str(path)),
    }
