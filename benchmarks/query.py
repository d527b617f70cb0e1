"""Time top-10 cosine search over the 38,158 tweets in DuckDB against a numpy brute force.

Run with ``make benchmark-query`` or ``.venv/bin/python benchmarks/query.py``. It needs
``../shared/data/tweets_sentiment.parquet`` and exits with a message when that file is
absent. The tweets are embedded once with all-MiniLM-L6-v2 and cached as a .npy file
under ``benchmarks/.cache/``.

Every method runs the same queries, each the stored embedding of a tweet, in one process,
taking turns in blocks of 10 queries:

- DuckDB, exact: ``array_cosine_similarity(embedding, ?::FLOAT[384])`` with ``ORDER BY score
  DESC LIMIT 10`` over a ``FLOAT[384]`` table in a DuckDB file, on a read-only connection kept
  open, timed from ``execute`` to the fetched rows. Two table layouts: DuckDB's default
  compression (as the pipeline's store is written) and floats stored uncompressed. DuckDB scans a table this
  small on one thread, so a third row runs the search on the uncompressed table as a
  ``UNION ALL`` of one rowid range per DuckDB thread.
- DuckDB, sign codes then exact rescoring: the same table with each vector's 384 signs packed
  into six ``BIGINT`` columns. One query takes the 1,000 rows nearest in Hamming distance
  (``bit_count(xor(...))``) and ranks only those with ``array_cosine_similarity``. It is an
  approximate search, shown to measure what exactness costs.
- The store: ``EmbeddingStore.nearest_texts`` on a store holding the tweets, which opens a
  connection per query and joins the texts and labels, as ``embetter-assets similar`` does.
- numpy: one matrix-vector product with the unit-length matrix (normalised once, before
  timing) and ``argpartition`` for the top 10.

It counts the queries where each method found numpy's 10 neighbours (ties aside), prints the
median and 90th percentile per query, and writes them to the "Similarity search" section of
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

from embetter_assets.store import STORAGE_VERSION

REPOSITORY = Path(__file__).resolve().parents[1]
CACHE_DIR = REPOSITORY / "benchmarks" / ".cache"
RESULTS_PATH = REPOSITORY / "benchmarks" / "RESULTS.md"
TWEETS_PATH = REPOSITORY.parent / "shared" / "data" / "tweets_sentiment.parquet"
SECTION_TITLE = "## Similarity search"

K = 10
CANDIDATES = 1_000
TARGET_RATIO = 3.0
TARGET_MILLISECONDS = 50.0
NUMPY = "numpy brute force"
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
    """Storage of a benchmark table: DuckDB settings applied before writing it, and whether it has sign codes."""

    settings: list[str] = field(default_factory=list)
    sign_codes: bool = False


UNCOMPRESSED = "SET disabled_compression_methods = 'alp,alprd'"
EXACT_DEFAULT = "DuckDB, exact, default compression"
EXACT_UNCOMPRESSED = "DuckDB, exact, floats uncompressed"
SPLIT_SCAN = "DuckDB, exact, floats uncompressed, one rowid range per thread"
SIGN_CODES = f"DuckDB, sign codes: Hamming top {CANDIDATES:,}, then exact cosine"
LAYOUTS = {
    EXACT_DEFAULT: Layout(),
    EXACT_UNCOMPRESSED: Layout([UNCOMPRESSED]),
    SIGN_CODES: Layout([UNCOMPRESSED], sign_codes=True),
}


def sign_words(embeddings: np.ndarray) -> np.ndarray:
    """Pack each row's signs (1 where a value is positive) into 64-bit words, one row per vector."""
    width = embeddings.shape[1]
    padded = np.zeros((len(embeddings), -(-width // 64) * 64), dtype=bool)
    padded[:, :width] = embeddings > 0
    return np.packbits(padded, axis=1).view(np.int64)


def build_table(path: Path, ids: list[str], embeddings: np.ndarray, layout: Layout) -> None:
    """Write the embeddings into a DuckDB file as ``tweets(id, embedding FLOAT[width], sign_0, ...)``.

    The file has the storage format the pipeline's store uses.
    """
    width = embeddings.shape[1]
    columns = {
        "id": pa.array(ids),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(embeddings.ravel()), width),
    }
    declarations = ["id VARCHAR NOT NULL", f"embedding FLOAT[{width}] NOT NULL"]
    if layout.sign_codes:
        for position, word in enumerate(sign_words(embeddings).T):
            columns[f"sign_{position}"] = pa.array(word)
            declarations.append(f"sign_{position} BIGINT NOT NULL")
    with duckdb.connect() as connection:
        for setting in layout.settings:
            connection.execute(setting)
        connection.execute(f"ATTACH '{path}' AS bench (STORAGE_VERSION '{STORAGE_VERSION}')")
        connection.register("incoming", pa.table(columns))
        connection.execute(f"CREATE TABLE bench.tweets ({', '.join(declarations)})")
        connection.execute(f"INSERT INTO bench.tweets SELECT {', '.join(columns)} FROM incoming")
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


class SplitScanSearch(DuckDBSearch):
    """The exact search as a ``UNION ALL`` of one rowid range per DuckDB thread.

    DuckDB scans a table of 38,158 rows on one thread (its process CPU time equals the wall
    time), so separate ranges are what lets every thread score a share.
    """

    def __init__(self, path: Path, width: int):
        super().__init__(path, width)
        n_rows = self.connection.execute("SELECT count(*) FROM tweets").fetchall()[0][0]
        n_parts = int(self.connection.execute("SELECT current_setting('threads')").fetchall()[0][0])
        bounds = np.linspace(0, n_rows, n_parts + 1).astype(int)
        parts = " UNION ALL ".join(
            f"SELECT id, array_cosine_similarity(embedding, $1::FLOAT[{width}]) AS score FROM tweets "
            f"WHERE rowid >= {start} AND rowid < {stop}"
            for start, stop in zip(bounds[:-1], bounds[1:])
        )
        self.sql = f"SELECT id, score FROM ({parts}) ORDER BY score DESC LIMIT {K}"


class SignCodeSearch(DuckDBSearch):
    """Approximate top-k search: Hamming distance on sign codes picks candidates and ``array_cosine_similarity`` ranks them."""

    def __init__(self, path: Path, width: int):
        super().__init__(path, width)
        n_words = -(-width // 64)
        # bit_count returns a TINYINT, which a sum of six words would overflow.
        hamming = " + ".join(f"bit_count(xor(sign_{i}, ${i + 2}::BIGINT))::SMALLINT" for i in range(n_words))
        self.sql = f"""
            SELECT id, array_cosine_similarity(embedding, $1::FLOAT[{width}]) AS score
            FROM tweets
            WHERE rowid IN (SELECT rowid FROM tweets ORDER BY {hamming} LIMIT {CANDIDATES})
            ORDER BY score DESC LIMIT {K}
        """

    def __call__(self, query: np.ndarray) -> list[str]:
        words = [int(word) for word in sign_words(query[None, :])[0]]
        return [row[0] for row in self.connection.execute(self.sql, [query.tolist(), *words]).fetchall()]


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


def time_searches(searches: dict, queries: np.ndarray, warmup: int, block: int) -> tuple[dict, dict]:
    """Time every search on every query; return seconds and found ids per search name.

    The searches take turns in blocks of ``block`` queries, so a burst of load from other
    processes on a shared machine slows all of them alike instead of one. Blocks rather than
    single queries, because on a 2-core machine a DuckDB query run right after numpy's product
    found a core still busy (OpenBLAS threads wait busily for more work): the parallel DuckDB
    search took 20.5 ms instead of 10.9 ms when the methods alternated query by query.
    """
    for query in queries[:warmup]:
        for search in searches.values():
            search(query)
    seconds = {name: [] for name in searches}
    found = {name: [] for name in searches}
    for start in range(0, len(queries), block):
        for name, search in searches.items():
            for query in queries[start : start + block]:
                started = time.perf_counter()
                ids = search(query)
                seconds[name].append(time.perf_counter() - started)
                found[name].append(ids)
    return {name: np.array(values) for name, values in seconds.items()}, found


def count_exact(found: list[list[str]], reference: list[list[str]], all_scores: list[np.ndarray], index: dict) -> int:
    """Count queries whose neighbours score as the reference's do, so swaps between equal scores pass.

    Scores within 1e-5 count as equal, as for duplicate tweets and float rounding.
    """
    exact = 0
    for mine, theirs, scores in zip(found, reference, all_scores):
        mine_scores = np.sort(scores[[index[text_id] for text_id in mine]])
        their_scores = np.sort(scores[[index[text_id] for text_id in theirs]])
        if len(mine) == len(theirs) and np.allclose(mine_scores, their_scores, atol=1e-5):
            exact += 1
    return exact


def summarize(name: str, seconds: np.ndarray, baseline: np.ndarray, exact: int) -> dict:
    median = float(np.median(seconds)) * 1000
    return {
        "method": name,
        "median_ms": median,
        "p90_ms": float(np.percentile(seconds, 90)) * 1000,
        "ratio": median / (float(np.median(baseline)) * 1000),
        "exact": exact,
    }


def render_section(rows: list[dict], *, n_texts: int, width: int, n_queries: int, block: int, threads: str, load: str) -> str:
    """Render the results as the RESULTS.md section, with the command, date and machine."""
    lines = [
        SECTION_TITLE,
        "",
        f"Top-{K} cosine search over the {n_texts:,} tweets' all-MiniLM-L6-v2 embeddings (`FLOAT[{width}]`), "
        f"{n_queries} queries per method after a warm-up, in one process, the methods taking turns in blocks of "
        f"{block} queries. Each query is a stored tweet's embedding. The exact DuckDB rows run `array_cosine_similarity` "
        f"with `ORDER BY score DESC LIMIT {K}` on a table in a DuckDB file over an open read-only connection, "
        "once with DuckDB's default compression (as the pipeline's store is written) and once with floats "
        "uncompressed (`disabled_compression_methods = 'alp,alprd'`); every file has the store's storage "
        f"format ({STORAGE_VERSION}). DuckDB scans a table this small on one "
        "thread (the process's CPU time equals the wall time), so the row \"one rowid range per thread\" runs "
        "the exact search on the uncompressed table as a `UNION ALL` of one rowid range per DuckDB thread. "
        "The sign-code row packs the signs of "
        "each vector into six `BIGINT` columns, takes the "
        f"{CANDIDATES:,} rows nearest in Hamming distance and ranks those by `array_cosine_similarity`, all "
        "in one query: an approximate search, which may miss a true neighbour. The store row is "
        "`EmbeddingStore.nearest_texts`, which opens a connection per query and joins texts and labels, as "
        "`embetter-assets similar` does. numpy multiplies the unit-length matrix (normalised before timing) "
        f"by the query and takes the top {K} with `argpartition`. \"exact top {K}\" counts the queries whose "
        f"{K} results score as numpy's do. Target: DuckDB's median at most {TARGET_RATIO:g} times numpy's and "
        f"at most {TARGET_MILLISECONDS:g} ms.",
        "",
        f"Command: `.venv/bin/python benchmarks/query.py` (or `make benchmark-query`), run "
        f"{datetime.date.today().isoformat()} on {_cpu_name()} ({os.cpu_count()} cores; load average {load}), "
        f"Python {platform.python_version()}, DuckDB {duckdb.__version__} with {threads} threads, numpy "
        f"{np.__version__}.",
        "",
        f"| method | median ms | 90th percentile ms | median / numpy | exact top {K} | meets target |",
        "| --- | ---: | ---: | ---: | ---: | --- |",
    ]
    for row in rows:
        if row["method"] == NUMPY:
            meets = ""
        elif _meets_target(row):
            meets = "yes"
        else:
            meets = "no"
        lines.append(
            f"| {row['method']} | {row['median_ms']:.1f} | {row['p90_ms']:.1f} | {row['ratio']:.2f} | "
            f"{row['exact']} of {n_queries} | {meets} |"
        )
    exact_rows = [row for row in rows if row["method"] in (EXACT_DEFAULT, EXACT_UNCOMPRESSED, SPLIT_SCAN, STORE)]
    best = min(exact_rows, key=lambda row: row["median_ms"])
    verdict = "meets" if _meets_target(best) else "misses"
    lines += [
        "",
        f"Fastest exact DuckDB search: {best['method']}, {best['median_ms']:.1f} ms, {best['ratio']:.2f} times "
        f"numpy, so exact search in DuckDB {verdict} the target in this run.",
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
    parser.add_argument("--block", type=int, default=10, help="queries a method runs before the next takes its turn (default: 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed queries run first (default: 3)")
    parser.add_argument("--no-write", action="store_true", help="print the results without updating RESULTS.md")
    args = parser.parse_args(argv)

    ids, texts, embeddings = embed_tweets()
    embeddings = np.ascontiguousarray(embeddings, dtype=np.float32)
    queries = embeddings[np.random.default_rng(0).choice(len(ids), size=args.queries, replace=False)]
    index = {text_id: row for row, text_id in enumerate(ids)}

    numpy_search = NumpySearch(ids, embeddings)
    width = embeddings.shape[1]
    with tempfile.TemporaryDirectory(prefix="embetter-query-benchmark-") as folder:
        searches = {NUMPY: numpy_search}
        duckdb_searches = []
        for position, (name, layout) in enumerate(LAYOUTS.items()):
            path = Path(folder) / f"tweets{position}.duckdb"
            build_table(path, ids, embeddings, layout)
            searches[name] = (SignCodeSearch if layout.sign_codes else DuckDBSearch)(path, width)
            duckdb_searches.append(searches[name])
            if name == EXACT_UNCOMPRESSED:
                searches[SPLIT_SCAN] = SplitScanSearch(path, width)
                duckdb_searches.append(searches[SPLIT_SCAN])
        searches[STORE] = StoreSearch(Path(folder) / "store.duckdb", ids, texts, embeddings)
        with duckdb.connect() as connection:
            threads = str(connection.execute("SELECT current_setting('threads')").fetchall()[0][0])
        load = _load_average()
        try:
            seconds, found = time_searches(searches, queries, args.warmup, args.block)
        finally:
            for search in duckdb_searches:
                search.close()

    all_scores = [numpy_search.scores(query) for query in queries]
    rows = [
        summarize(name, values, seconds[NUMPY], count_exact(found[name], found[NUMPY], all_scores, index))
        for name, values in seconds.items()
    ]

    section = render_section(
        rows, n_texts=len(ids), width=width, n_queries=args.queries, block=args.block, threads=threads, load=load
    )
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"Wrote the section to {RESULTS_PATH.relative_to(REPOSITORY)}.")


if __name__ == "__main__":
    main()
