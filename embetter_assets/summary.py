"""The text printed after a full materialization: what is stored, how it scores, where to look."""

from __future__ import annotations

from pathlib import Path

from embetter_assets.store import EmbeddingStore


def finetuner_reused(results: list) -> bool:
    """Tell whether the ``trained_finetuner`` run among ``results`` reused a stored version."""
    for result in results:
        materializations = result.asset_materializations_for_node("trained_finetuner")
        if materializations:
            return bool(materializations[0].metadata["reused"].value)
    raise ValueError("None of the runs materialized trained_finetuner.")


def closing_summary(store: EmbeddingStore, data_dir: Path, *, reused: bool) -> str:
    """Describe what a full run left in the store and where to look next, as printed text."""
    from embetter_assets.defs.assets.queue import queue_csv_path
    from embetter_assets.defs.resources import DataFoldersResource
    from embetter_assets.evaluation import METRIC_LABELS

    counts = store.query(
        """
        SELECT
            (SELECT count(*) FROM texts) AS texts,
            (SELECT count(*) FROM base_embeddings) AS embedded,
            (SELECT count(*) FROM current_labels) AS labels,
            (SELECT count(*) FROM current_labels WHERE split = 'train') AS train_labels,
            (SELECT count(*) FROM current_labels WHERE split = 'test') AS test_labels
        """
    ).row(0, named=True)
    finetuner = store.latest_finetuner()
    version = int(finetuner["version"])
    summary = store.query("SELECT * FROM evaluation_summaries WHERE finetuner_version = ?", [version]).row(0, named=True)
    scores = store.query(
        "SELECT space, metric, value FROM evaluation_reports WHERE finetuner_version = ?", [version]
    )
    spaces = list(dict.fromkeys(scores["space"].to_list()))
    values = {(space, metric): value for space, metric, value in scores.iter_rows()}
    queue_path = queue_csv_path(DataFoldersResource(root=str(data_dir)), version)
    queued = store.query("SELECT count(*) AS n FROM labelling_queue WHERE finetuner_version = ?", [version])["n"][0]

    origin = "reused: labels and settings unchanged" if reused else f"trained on {finetuner['n_train']} texts"
    lines = [
        "",
        f"Done. {counts['texts']:,} texts ({counts['embedded']:,} distinct contents embedded), {counts['labels']:,} labels.",
        f"Finetuner version {version} ({finetuner['kind']}), {origin}.",
    ]
    if (summary["train_texts"], summary["test_texts"]) != (counts["train_labels"], counts["test_labels"]):
        lines.append(
            f"Of {counts['train_labels']:,} training and {counts['test_labels']:,} held-out labels, "
            f"{summary['train_texts']:,} and {summary['test_texts']:,} distinct texts remain: copies of a text "
            "count once, and a text held out under any id never trains (counts in trained_finetuner's metadata)."
        )
    lines += [
        f"Held-out scores on {summary['test_texts']:,} texts:",
        "  " + f"{'':32}" + "".join(f"{space:>14}" for space in spaces),
    ]
    for metric, label in METRIC_LABELS.items():
        row = [values.get((space, metric)) for space in spaces]
        lines.append("  " + f"{label:32}" + "".join(f"{value:>14.3f}" if value is not None else f"{'-':>14}" for value in row))
    lines += [
        summary["recommendation"],
        f"Report:          {summary['page_path']}",
        f"Labelling queue: {queue_path} ({queued} texts; fill in the label column and save it under {data_dir / 'labels'})",
        f"Store:           {store.path} (query it with .venv/bin/duckdb -readonly {store.path}, or make sql)",
        "UI:              make dev, then open http://127.0.0.1:3000",
    ]
    return "\n".join(lines)
