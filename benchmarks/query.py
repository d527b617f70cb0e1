"""Time top-10 cosine search over the 38,158 tweets in DuckDB against a numpy brute force.

Run with ``make benchmark-query`` or ``.venv/bin/python benchmarks/query.py``. It needs
``../shared/data/tweets_sentiment.parquet`` and exits with a message when that file is
absent. The tweets are embedded once with all-MiniLM-L6-v2 and cached as a .npy file
under ``benchmarks/.cache/``.

Every method runs the same queries, each the stored embedding of a tweet, in one process,
taking turns query by query:

- DuckDB: ``array_cosine_similarity(embedding, ?::FLOAT[384])`` with ``ORDER BY score DESC
  LIMIT 10`` over a ``FLOAT[384]`` table in a DuckDB file, on a read-only connection kept
  open, timed from ``execute`` to the fetched rows. Three table layouts: DuckDB's defaults
  (as the pipeline's store is written), floats stored uncompressed, and uncompressed floats
  in row groups small enough that every thread scans a share. A further row only reads the
  vectors of the last layout, without scoring them, to show how much of the time that takes.
- The store: ``EmbeddingStore.nearest_texts`` on a store holding the tweets, which opens a
  connection per query and joins the texts and labels, as ``embetter-assets similar`` does.
- numpy: one matrix-vector product with the unit-length matrix (normalised once, before
  timing) and ``argpartition`` for the top 10.

It checks that every method returns the same neighbours as numpy, prints the median and
90th percentile per query, and writes them to the "Similarity search" section of
``benchmarks/RESULTS.md``. Target: DuckDB's median at most 3 times numpy's and at most 50 ms.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import os
import platform
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa

from results_page import replace_section

REPOSITORY = Path(__file__).resolve().parents[1]
CACHE_DIR = REPOSITORY / "benchmarks" / ".cache"
RESULTS_PATH = REPOSITORY / "benchmarks" / "RESULTS.md"
TWEETS_PATH = REPOSITORY.parent / "shared" / "data" / "tweets_sentiment.parquet"
SECTION_TITLE = "## Similarity search"

K = 10
TARGET_RATIO = 3.0
TARGET_MILLISECONDS = 50.0
NUMPY = "numpy brute force"
SCAN_ONLY = "DuckDB, floats uncompressed, 10,240-row groups: reading the vectors only, no scores"
STORE = "store: EmbeddingStore.nearest_texts"
SEARCH_SQL = (
    "SELECT id, array_cosine_similarity(embedding, ?::FLOAT[{width}]) AS score "
    "FROM tweets ORDER BY score DESC LIMIT {k}"
)


def embed_tweets() -> tuple[list[str], list[str], np.ndarray]:
    """Return the tweet ids, texts and embeddings, encoding only when the cache lacks them."""
    if not TWEETS_PATH.is_file():
        sys.exit(f"Cannot run the query benchmark: {TWEETS_PATH} does not exist. It needs the 38,158 tweets.")
    frame = pl.read_parquet(TWEETS_PATH, columns=["id", "text"]).sort("id")
    texts = frame["text"].to_list()
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE_DIR / f"tweets-all-MiniLM-L6-v2-{digest}.npy"
    if path.exists():
        return frame["id"].to_list(), texts, np.load(path)

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from embetter_assets.encoder import SentenceEncoder

    print(f"Encoding {len(texts)} tweets; cached at {path.relative_to(REPOSITORY)} afterwards.", flush=True)
    started = time.perf_counter()
    embeddings = SentenceEncoder().transform_in_chunks(texts, chunk_size=1024)
    print(f"  encoded in {time.perf_counter() - started:.0f} s", flush=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return frame["id"].to_list(), texts, embeddings


@dataclass
class Layout:
    """Storage of a benchmark table: DuckDB settings applied before writing it, and rows per row group."""

    settings: list[str] = field(default_factory=list)
    row_group_size: int | None = None


# DuckDB scans one row group per thread, and a table under 122,880 rows (DuckDB's default
# row group size) has one row group, so 10,240-row groups let every core take a share.
LAYOUTS = {
    "DuckDB, default storage": Layout(),
    "DuckDB, floats uncompressed": Layout(["SET disabled_compression_methods = 'alp,alprd'"]),
    "DuckDB, floats uncompressed, 10,240-row groups": Layout(
        ["SET disabled_compression_methods = 'alp,alprd'"], row_group_size=10_240
    ),
}


def build_table(path: Path, ids: list[str], embeddings: np.ndarray, layout: Layout) -> None:
    """Write the embeddings into a DuckDB file as ``tweets(id VARCHAR, embedding FLOAT[width])``."""
    width = embeddings.shape[1]
    vectors = pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), width)
    options = f" (ROW_GROUP_SIZE {int(layout.row_group_size)})" if layout.row_group_size else ""
    with duckdb.connect() as connection:
        for setting in layout.settings:
            connection.execute(setting)
        connection.execute(f"ATTACH '{path}' AS bench{options}")
        connection.register("incoming", pa.table({"id": pa.array(ids), "embedding": vectors}))
        connection.execute(f"CREATE TABLE bench.tweets (id VARCHAR NOT NULL, embedding FLOAT[{width}] NOT NULL)")
        connection.execute("INSERT INTO bench.tweets SELECT id, embedding FROM incoming")
        connection.execute("CHECKPOINT bench")


class DuckDBSearch:
    """Top-k search on one DuckDB file, over a read-only connection kept open."""

    def __init__(self, path: Path, width: int):
        self.connection = duckdb.connect(str(path), read_only=True)
        self.sql = SEARCH_SQL.format(width=width, k=K)

    def __call__(self, query: np.ndarray) -> list[str]:
        return [row[0] for row in self.connection.execute(self.sql, [query.tolist()]).fetchall()]

    def close(self) -> None:
        self.connection.close()


class ScanOnly(DuckDBSearch):
    """Reads every embedding of the table without scoring it: the floor under the DuckDB searches."""

    def __init__(self, path: Path, width: int):
        super().__init__(path, width)
        self.sql = "SELECT count(*) FROM tweets WHERE embedding[1] > -2"

    def __call__(self, query: np.ndarray) -> None:
        self.connection.execute(self.sql).fetchall()


class StoreSearch:
    """``EmbeddingStore.nearest_texts`` in the base space, on a store holding the tweets."""

    def __init__(self, path: Path, ids: list[str], texts: list[str], embeddings: np.ndarray):
        from embetter_assets.encoder import DEFAULT_MODEL
        from embetter_assets.ingest import content_hash
        from embetter_assets.store import EmbeddingStore

        hashes = [content_hash(text) for text in texts]
        self.store = EmbeddingStore(path)
        self.store.replace_text_batch(
            "tweets",
            pl.DataFrame(
                {
                    "text_id": ids,
                    "row_number": pl.int_range(1, len(ids) + 1, eager=True).cast(pl.Int32),
                    "content_hash": hashes,
                    "text": texts,
                    "source_file": [str(TWEETS_PATH)] * len(ids),
                }
            ),
        )
        first_rows = sorted({content: row for row, content in reversed(list(enumerate(hashes)))}.values())
        self.store.add_base_embeddings(DEFAULT_MODEL, [hashes[row] for row in first_rows], embeddings[first_rows])

    def __call__(self, query: np.ndarray) -> list[str]:
        return self.store.nearest_texts(query, K, "base")["text_id"].to_list()


class NumpySearch:
    """Brute force: one matrix-vector product with the unit-length matrix, then ``argpartition``."""

    def __init__(self, ids: list[str], embeddings: np.ndarray):
        self.ids = ids
        self.unit = embeddings / np.linalg.norm(embeddings, axis=1, keepdims=True)

    def scores(self, query: np.ndarray) -> np.ndarray:
        return self.unit @ (query / np.linalg.norm(query))

    def __call__(self, query: np.ndarray) -> list[str]:
        scores = self.scores(query)
        top = np.argpartition(-scores, K)[:K]
        return [self.ids[row] for row in top[np.argsort(-scores[top], kind="stable")]]


def time_searches(searches: dict, queries: np.ndarray, warmup: int) -> tuple[dict, dict]:
    """Time every search on every query; return seconds and found ids per search name.

    The searches take turns query by query, so a burst of load from other processes on a
    shared machine slows all of them alike instead of one.
    """
    for query in queries[:warmup]:
        for search in searches.values():
            search(query)
    seconds = {name: [] for name in searches}
    found = {name: [] for name in searches}
    for query in queries:
        for name, search in searches.items():
            started = time.perf_counter()
            ids = search(query)
            seconds[name].append(time.perf_counter() - started)
            found[name].append(ids)
    return {name: np.array(values) for name, values in seconds.items()}, found


def count_disagreements(found: list[list[str]], reference: list[list[str]], all_scores: list[np.ndarray], index: dict) -> int:
    """Count queries whose neighbours differ from the reference's, ignoring swaps between equal scores.

    Scores within 1e-5 count as equal, as for duplicate tweets and float rounding.
    """
    differing = 0
    for mine, theirs, scores in zip(found, reference, all_scores):
        mine_scores = np.sort(scores[[index[text_id] for text_id in mine]])
        their_scores = np.sort(scores[[index[text_id] for text_id in theirs]])
        if len(mine) != len(theirs) or not np.allclose(mine_scores, their_scores, atol=1e-5):
            differing += 1
    return differing


def summarize(name: str, seconds: np.ndarray, baseline: np.ndarray) -> dict:
    median = float(np.median(seconds)) * 1000
    return {
        "method": name,
        "median_ms": median,
        "p90_ms": float(np.percentile(seconds, 90)) * 1000,
        "ratio": median / (float(np.median(baseline)) * 1000),
    }


def render_section(rows: list[dict], *, n_texts: int, width: int, n_queries: int, threads: str, disagreements: dict, load: str) -> str:
    """Render the results as the RESULTS.md section, with the command, date and machine."""
    lines = [
        SECTION_TITLE,
        "",
        f"Top-{K} cosine search over the {n_texts:,} tweets' all-MiniLM-L6-v2 embeddings (`FLOAT[{width}]`), "
        f"{n_queries} queries per method after a warm-up, in one process, the methods taking turns query by "
        "query. Each query is a stored tweet's embedding. The DuckDB rows run `array_cosine_similarity` with "
        f"`ORDER BY score DESC LIMIT {K}` on a table in a DuckDB file over an open read-only connection: with "
        "DuckDB's default storage (as the pipeline's store is written), with floats uncompressed "
        "(`disabled_compression_methods = 'alp,alprd'`), and with uncompressed floats in 10,240-row row groups "
        "so that every thread scans a share; the row marked \"reading the vectors only\" runs a query on "
        "that last table that touches every vector but scores none. The store row is `EmbeddingStore.nearest_texts`, which opens a "
        "connection per query and joins texts and labels, as `embetter-assets similar` does. numpy multiplies "
        f"the unit-length matrix (normalised before timing) by the query and takes the top {K} with "
        f"`argpartition`. Target: DuckDB's median at most {TARGET_RATIO:g} times numpy's and at most "
        f"{TARGET_MILLISECONDS:g} ms.",
        "",
        f"Command: `.venv/bin/python benchmarks/query.py` (or `make benchmark-query`), run "
        f"{datetime.date.today().isoformat()} on {_cpu_name()} ({os.cpu_count()} cores; load average {load}), "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__} with {threads} threads, numpy "
        f"{np.__version__}.",
        "",
        "| method | median ms | 90th percentile ms | median / numpy | meets target |",
        "| --- | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        if row["method"] in (NUMPY, SCAN_ONLY):
            meets = ""
        elif _meets_target(row):
            meets = "yes"
        else:
            meets = "no"
        lines.append(
            f"| {row['method']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['ratio']:.2f} | {meets} |"
        )
    searches = [row for row in rows if row["method"] in LAYOUTS]
    best = min(searches, key=lambda row: row["median_ms"])
    verdict = "meets" if _meets_target(best) else "misses"
    lines += [
        "",
        f"Fastest DuckDB layout: {best['method']}, {best['median_ms']:.1f} ms, {best['ratio']:.2f} times numpy, "
        f"so DuckDB {verdict} the target in this run.",
        "",
        "Queries whose neighbours differ from numpy's (beyond ties): "
        + ", ".join(f"{name} {count}" for name, count in disagreements.items())
        + ".",
    ]
    return "\n".join(lines) + "\n"


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _load_average() -> str:
    try:
        return " / ".join(f"{value:.1f}" for value in os.getloadavg()) + " over 1 / 5 / 15 min"
    except OSError:
        return "unknown"


def _meets_target(row: dict) -> bool:
    return row["ratio"] <= TARGET_RATIO and row["median_ms"] <= TARGET_MILLISECONDS


def write_section(section: str) -> None:
    """Replace the "Similarity search" section of RESULTS.md, keeping every other section."""
    replace_section(SECTION_TITLE, section, RESULTS_PATH)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--queries", type=int, default=50, help="timed queries per method (default: 50)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed queries run first (default: 3)")
    parser.add_argument("--no-write", action="store_true", help="print the results without updating RESULTS.md")
    args = parser.parse_args(argv)

    ids, texts, embeddings = embed_tweets()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    queries = embeddings[np.random.default_rng(0).choice(len(ids), size=args.queries, replace=False)]
    index = {text_id: row for row, text_id in enumerate(ids)}

    numpy_search = NumpySearch(ids, embeddings)
    with tempfile.TemporaryDirectory(prefix="embetter-query-benchmark-") as folder:
        searches = {NUMPY: numpy_search}
        for position, (name, layout) in enumerate(LAYOUTS.items()):
            path = Path(folder) / f"tweets{position}.duckdb"
            build_table(path, ids, embeddings, layout)
            searches[name] = DuckDBSearch(path, embeddings.shape[1])
        searches[SCAN_ONLY] = ScanOnly(path, embeddings.shape[1])
        searches[STORE] = StoreSearch(Path(folder) / "store.duckdb", ids, texts, embeddings)
        with duckdb.connect() as connection:
            threads = str(connection.execute("SELECT current_setting('threads')").fetchall()[0][0])
        load = _load_average()
        try:
            seconds, found = time_searches(searches, queries, args.warmup)
        finally:
            for name in [*LAYOUTS, SCAN_ONLY]:
                searches[name].close()

    baseline = seconds[NUMPY]
    rows = [summarize(name, values, baseline) for name, values in seconds.items()]
    all_scores = [numpy_search.scores(query) for query in queries]
    disagreements = {
        name: count_disagreements(found[name], found[NUMPY], all_scores, index)
        for name in searches
        if name not in (NUMPY, SCAN_ONLY)
    }

    section = render_section(
        rows, n_texts=len(ids), width=embeddings.shape[1], n_queries=args.queries, threads=threads,
        disagreements=disagreements, load=load,
    )
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"Wrote the section to {RESULTS_PATH.relative_to(REPOSITORY)}.")


if __name__ == "__main__":
    main()
