"""Turn the stored labels into clean training and held-out evaluation sets."""

from __future__ import annotations

from dataclasses import dataclass, field

import polars as pl


@dataclass
class LabelSets:
    """Training and held-out rows (``content_hash``, ``label``, ``batch``), one per distinct text.

    ``counts`` says how many texts each side holds and how many were dropped, and why;
    ``single_text_classes`` names the classes left out of training for having one text.
    """

    train: pl.DataFrame
    test: pl.DataFrame
    counts: dict[str, int] = field(default_factory=dict)
    single_text_classes: list[str] = field(default_factory=list)


def split_labels(labels: pl.DataFrame) -> LabelSets:
    """Split current labels into training and held-out sets keyed by content hash.

    ``labels`` has the columns ``content_hash``, ``label``, ``split`` and ``batch``, one row per text id
    (see ``EmbeddingStore.current_labels``). Texts are compared by content, not by id, so:

    - a text held out anywhere never trains, even under another id;
    - a text that carries two different labels on the same side is dropped from that side,
      because either label would teach the finetuner something false;
    - copies of a text with the same label count once;
    - a class with a single training text is left out of training, because a finetuner
      cannot learn a class from one example and validate it too.

    Both sets keep the order of ``labels``, which is the order the labels arrived.
    """
    test_hashes = labels.filter(pl.col("split") == "test")["content_hash"].unique()
    train_rows = labels.filter(pl.col("split") == "train")
    leaked = train_rows.filter(pl.col("content_hash").is_in(test_hashes.implode()))
    train_rows = train_rows.filter(~pl.col("content_hash").is_in(test_hashes.implode()))

    train, train_conflicts = _one_label_per_text(train_rows)
    single = train.group_by("label").len().filter(pl.col("len") < 2)["label"]
    train = train.filter(~pl.col("label").is_in(single.implode()))
    test, test_conflicts = _one_label_per_text(labels.filter(pl.col("split") == "test"))
    return LabelSets(
        train=train,
        test=test,
        counts={
            "train_texts": train.height,
            "test_texts": test.height,
            "train_rows_also_held_out": leaked.height,
            "conflicting_train_texts_dropped": train_conflicts,
            "conflicting_test_texts_dropped": test_conflicts,
            "train_classes_with_one_text_dropped": single.len(),
        },
        single_text_classes=sorted(single.to_list()),
    )


def _one_label_per_text(rows: pl.DataFrame) -> tuple[pl.DataFrame, int]:
    per_text = rows.group_by("content_hash", maintain_order=True).agg(
        pl.col("label").unique().alias("labels"), pl.col("batch").first()
    )
    conflicting = per_text.filter(pl.col("labels").list.len() > 1).height
    clean = (
        per_text.filter(pl.col("labels").list.len() == 1)
        .with_columns(pl.col("labels").list.first().alias("label"))
        .select("content_hash", "label", "batch")
    )
    return clean, conflicting


def case_variants(labels: pl.Series) -> list[list[str]]:
    """Return groups of distinct labels that differ only in letter case, such as ``Tech`` and ``tech``.

    They count as separate classes, which is rarely what a labeller meant, so the pipeline
    warns about them rather than merging them.
    """
    distinct = pl.DataFrame({"label": labels.cast(pl.String).unique()})
    groups = (
        distinct.group_by(pl.col("label").str.to_lowercase().alias("folded"))
        .agg(pl.col("label").sort())
        .filter(pl.col("label").list.len() > 1)
        .sort("folded")
    )
    return groups["label"].to_list()
