"""Small real stores for tests: BBC News articles cut to headline and first paragraph.

The cut keeps texts real but short, so the real encoder embeds a slice in seconds. Each
topic contributes its first articles by id, so ``bbc-sports-001`` and the other ``-001``
articles are always in a slice.
"""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import polars as pl

from embetter_assets.defs.refresh import default_resources
from embetter_assets.demo import load_bbc_news
from embetter_assets.ingest import content_hash

TEXT_FILE = "bbc_slice.csv"
LABEL_FILE = "bbc_slice_labels.csv"
# Enough epochs to separate five topics on a few dozen labels, few enough to train in seconds.
FAST_FINETUNER = {"n_epochs": 30}


def write_bbc_slice(data_dir: Path, *, per_topic: int, n_train: int, n_test: int, seed: int = 1) -> pl.DataFrame:
    """Write a text batch and a label batch of ``n_train`` training and ``n_test`` held-out labels.

    Returns every article of the slice with its ``id``, ``text`` and true ``topic``.
    """
    articles = (
        load_bbc_news()
        .with_columns(pl.col("text").str.split("\n\n").list.slice(0, 2).list.join(". ").alias("text"))
        .sort("id")
        .group_by("topic", maintain_order=True)
        .head(per_topic)
    )
    texts_dir, labels_dir = Path(data_dir) / "texts", Path(data_dir) / "labels"
    texts_dir.mkdir(parents=True, exist_ok=True)
    labels_dir.mkdir(parents=True, exist_ok=True)
    articles.select("id", "text").write_csv(texts_dir / TEXT_FILE)

    shuffled = articles.sample(fraction=1.0, shuffle=True, seed=seed)
    labels = pl.concat(
        [
            shuffled.head(n_train).with_columns(pl.lit("train").alias("split")),
            shuffled.slice(n_train, n_test).with_columns(pl.lit("test").alias("split")),
        ]
    )
    labels.select(pl.col("id").alias("text_id"), pl.col("topic").alias("label"), "split").write_csv(labels_dir / LABEL_FILE)
    return articles


def materialize_slice(data_dir: Path, instance: dg.DagsterInstance, *, queue_config: dict | None = None) -> dict:
    """Materialize every asset but the evaluation report on the slice in ``data_dir``; return the resources.

    The report is left out because nothing built on these stores reads it and it is the
    slowest stage.
    """
    from embetter_assets.definitions import ALL_ASSETS

    resources = default_resources(data_dir)
    instance.add_dynamic_partitions("text_batches", [TEXT_FILE])
    instance.add_dynamic_partitions("label_batches", [LABEL_FILE])
    stages = [
        (["raw_texts", "base_embeddings"], TEXT_FILE, None),
        (["labelled_subset"], LABEL_FILE, None),
        (["trained_finetuner"], None, {"trained_finetuner": {"config": FAST_FINETUNER}}),
        (["finetuned_embeddings"], TEXT_FILE, None),
        (["labelling_queue"], None, {"labelling_queue": {"config": queue_config or {}}}),
    ]
    for selection, partition_key, ops in stages:
        dg.materialize(
            ALL_ASSETS,
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources=resources,
            run_config={"ops": ops} if ops else None,
        )
    return resources


def text_rows(batch: str, ids: list[str], texts: list[str]) -> pl.DataFrame:
    """Return the rows ``EmbeddingStore.replace_text_batch`` expects for ``texts`` under ``ids``."""
    return pl.DataFrame(
        {
            "text_id": ids,
            "row_number": pl.Series(range(1, len(texts) + 1), dtype=pl.Int32),
            "content_hash": [content_hash(text) for text in texts],
            "text": texts,
            "source_file": [batch] * len(texts),
        }
    )
