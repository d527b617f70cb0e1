"""Label batches: the labelled subset of the texts."""

import dagster as dg
import polars as pl

from embetter_assets.defs.metadata import markdown_table
from embetter_assets.defs.partitions import label_batches
from embetter_assets.defs.resources import DataFoldersResource, StoreResource
from embetter_assets.ingest import read_label_batch
from embetter_assets.labelsets import case_variants


@dg.asset(
    partitions_def=label_batches,
    group_name="labels",
    kinds={"duckdb", "polars"},
    description=(
        "The labels of one batch file in `data/labels/`, stored in the `labels` table. A text labelled "
        "in two batches takes the label of the newer batch (the one first loaded later); the metadata "
        "counts such conflicts."
    ),
)
def labelled_subset(
    context: dg.AssetExecutionContext, store: StoreResource, folders: DataFoldersResource
) -> dg.MaterializeResult:
    path = folders.label_file(context.partition_key)
    labels, counts = read_label_batch(path)
    embedding_store = store.get_store()
    counts |= embedding_store.replace_label_batch(context.partition_key, labels)
    # Pairs are found among all current labels, but only those involving this batch are reported here.
    batch_labels = set(labels["label"].to_list())
    variants = [
        group for group in case_variants(embedding_store.current_labels()["label"]) if batch_labels.intersection(group)
    ]
    if variants:
        spelled = "; ".join(" / ".join(repr(label) for label in group) for group in variants)
        context.log.warning(
            f"Some labels differ only in letter case and count as separate classes: {spelled}. If they "
            "mean the same class, spell them alike in the label files and materialize those batches again."
        )

    per_class = (
        labels.group_by("label", "split").len().pivot(on="split", index="label", values="len").fill_null(0).sort("label")
    )
    context.log.info(
        f"Stored {counts['labels']} labels from {path} ({counts['train']} train, {counts['test']} held out, "
        f"{counts['duplicate_rows_dropped']} duplicate rows dropped, "
        f"{counts['rows_without_label_skipped']} rows without a label skipped, "
        f"{counts['label_conflicts_with_other_batches']} texts labelled differently by another batch)"
    )
    return dg.MaterializeResult(
        metadata={
            "source_file": dg.MetadataValue.path(str(path)),
            **counts,
            "classes": labels["label"].n_unique(),
            "classes_differing_only_in_case": dg.MetadataValue.json(variants),
            "labels_per_class": dg.MetadataValue.md(markdown_table(per_class.rows(), per_class.columns)),
        }
    )


def class_counts(labels: pl.DataFrame) -> dict[str, int]:
    """Count rows per label, for metadata."""
    return {str(label): int(count) for label, count in labels.group_by("label").len().sort("label").iter_rows()}
