"""The ``embetter-assets`` command: build and query the store from a terminal.

``embetter-assets build`` materializes every asset for every batch file in the data folder's
``texts/`` and ``labels/``, as ``make run`` does for the demo, and prints a summary. Files and
steps already up to date cost little. ``embetter-assets similar "some text" -k 10 --space
finetuned`` embeds the text with the store's encoder (and, for the finetuned space, the newest
finetuner), runs a top-k cosine search in DuckDB and prints one row per neighbour: text id,
score, label and the start of the text. Bad input and problems with the store are reported as
one line on stderr with exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import duckdb
import polars as pl

from embetter_assets.store import EmbeddingStore, StoreError, default_store_path

EXIT_ERROR = 2
# Characters of each text shown in the results table.
TEXT_PREVIEW_CHARS = 70
# How long a search waits for a pipeline run that holds the store's write lock.
LOCK_TIMEOUT_SECONDS = 30.0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line ``argv`` (default: ``sys.argv[1:]``) and return the exit status."""
    parser = _build_parser()
    args = parser.parse_args(argv)
    try:
        return args.command(args)
    except (StoreError, ValueError, duckdb.Error) as error:
        print(f"embetter-assets: error: {error}", file=sys.stderr)
        return EXIT_ERROR


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embetter-assets", description="Build and query the embetter-assets DuckDB store.")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    build = commands.add_parser(
        "build",
        help="materialize every asset for the batch files in the data folder",
        description=(
            "Register every file in DATA_DIR/texts and DATA_DIR/labels as a partition and materialize "
            "every asset for them, in dependency order, without the Dagster daemon. Runs are recorded "
            "in DAGSTER_HOME (default: DATA_DIR/dagster_home), so the UI shows them."
        ),
    )
    build.add_argument("--data-dir", type=Path, default=None, help="data folder (default: EMBETTER_DATA_DIR or data)")
    build.add_argument(
        "--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING"], help="lowest level of Dagster's log (default: INFO)"
    )
    build.set_defaults(command=_build)

    similar = commands.add_parser(
        "similar",
        help="print the stored texts most similar to a text",
        description=(
            "Embed TEXT, find the k stored texts with the highest cosine similarity in DuckDB "
            "(array_cosine_similarity) and print their id, score, label and start."
        ),
    )
    similar.add_argument("text", metavar="TEXT", help="the text to search for")
    similar.add_argument("-k", type=_positive_int, default=10, help="number of neighbours to print (default: 10)")
    similar.add_argument(
        "--space",
        choices=["base", "finetuned"],
        default="finetuned",
        help="search the base embedding or the newest finetuner's embedding (default: finetuned)",
    )
    similar.add_argument(
        "--db",
        type=Path,
        default=None,
        help="the DuckDB store (default: EMBETTER_DUCKDB_PATH, else embetter.duckdb in EMBETTER_DATA_DIR or data/)",
    )
    similar.set_defaults(command=_similar)
    return parser


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {value!r}") from None
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _build(args: argparse.Namespace) -> int:
    from embetter_assets.defs.refresh import default_resources, materialize_everything, persistent_instance
    from embetter_assets.defs.resources import default_data_dir
    from embetter_assets.defs.sensors import list_batch_files
    from embetter_assets.summary import closing_summary, finetuner_reused

    data_dir = args.data_dir or default_data_dir()
    keys = {}
    for folder in ("texts", "labels"):
        files, skipped = list_batch_files(Path(data_dir) / folder, min_age_seconds=0)
        for name, reason in skipped:
            if not name.startswith("."):
                print(f"Skipping {Path(data_dir) / folder / name}: {reason}.", file=sys.stderr)
        keys[folder] = [batch_file.key for batch_file in files]
    for folder, kind in (("texts", "text file (a text column, optionally id)"), ("labels", "label file (text_id, label, optionally split)")):
        if not keys[folder]:
            raise ValueError(f"No {kind} in {Path(data_dir) / folder}. Add a CSV, Parquet or JSON Lines file there.")

    results = materialize_everything(
        persistent_instance(data_dir),
        text_keys=keys["texts"],
        label_keys=keys["labels"],
        data_dir=data_dir,
        log_level=args.log_level,
    )
    store = default_resources(data_dir)["store"].get_store()
    print(closing_summary(store, data_dir, reused=finetuner_reused(results)))
    return 0


def _similar(args: argparse.Namespace) -> int:
    path = args.db or default_store_path()
    if Path(path).is_dir():
        raise StoreError(
            f"Store {path} is a folder, not a DuckDB file. Pass --db with the file itself, such as "
            f"{Path(path) / 'embetter.duckdb'}."
        )
    if not Path(path).is_file():
        raise StoreError(f"Store {path} not found. Run `make run` to build it, or pass --db with the path of a store.")
    store = EmbeddingStore(path, lock_timeout=LOCK_TIMEOUT_SECONDS)
    space = store.search_space(args.space)
    query = _embed_query(args.text, space)
    neighbours = store.nearest_texts(query, args.k, args.space)

    where = f"finetuner version {space['finetuner_version']}" if args.space == "finetuned" else space["model"]
    print(f"{neighbours.height} nearest texts in the {args.space} space ({where}) of {path}")
    print(format_neighbours(neighbours))
    unsearched = store.count_texts_without_embedding(args.space)
    if unsearched:
        asset = "finetuned_embeddings" if args.space == "finetuned" else "base_embeddings"
        print(
            f"{unsearched} stored texts have no embedding in this space yet and were not searched; "
            f"materialize {asset} for their text batches."
        )
    return 0


def _embed_query(text: str, space: dict):
    """Embed ``text`` with the store's encoder and, for the finetuned space, its newest finetuner."""
    if not text.strip():
        raise ValueError("TEXT is empty; pass the text to search for.")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from embetter_assets.encoder import SentenceEncoder

    query = SentenceEncoder(space["model"]).transform([text])
    if space["space"] == "finetuned":
        from embetter_assets.finetune import load_finetuner

        query = load_finetuner(space["weights"]).transform(query)
    return query[0]


def format_neighbours(neighbours: pl.DataFrame) -> str:
    """Render search results as an aligned text table: text_id, score, label and the text's start."""
    rows = [
        (text_id, f"{score:.4f}", label or "", _preview(text))
        for text_id, score, label, text in neighbours.select("text_id", "score", "label", "text").iter_rows()
    ]
    header = ("text_id", "score", "label", "text")
    widths = [max(len(row[column]) for row in [header, *rows]) for column in range(3)]
    lines = []
    for row in [header, *rows]:
        cells = [row[0].ljust(widths[0]), row[1].rjust(widths[1]), row[2].ljust(widths[2]), row[3]]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def _preview(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= TEXT_PREVIEW_CHARS else flat[: TEXT_PREVIEW_CHARS - 3] + "..."


if __name__ == "__main__":
    sys.exit(main())
