"""DuckDB under parallel processes: backfills, readers during writes, and a writer killed mid-write.

DuckDB lets one process hold a file for writing, and no other process may open it while it
does. These tests run real Dagster materializations in several processes against one DuckDB
file and check that writers wait their turn, that readers get in between writes, and that a
writer killed with SIGKILL leaves nothing half-written.
"""

import multiprocessing
import os
import signal
import subprocess
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import dagster as dg
import polars as pl
import pytest

from embetter_assets.defs.partitions import text_batches
from embetter_assets.defs.resources import (
    StoreResource,
)
from embetter_assets.demo import load_bbc_news
from embetter_assets.ingest import read_text_batch
from embetter_assets.store import EmbeddingStore

N_PARTITIONS = 8
TEXTS_PER_PARTITION = 25
CONCURRENT_STEPS = 4
REPEATS = 3
REPOSITORY = Path(__file__).resolve().parents[1]


def _backfill_job():
    """Return the production text ingest job, rebuildable in step processes.

    Its asset checks are left out: they only add step processes, and readers during writes
    are tested on their own below.
    """
    job = dg.build_reconstructable_job(
        "embetter_assets.defs.automation", "load_job", reconstructable_args=("ingest_text_batches",)
    )
    return job.get_subset(asset_selection={dg.AssetKey("raw_texts"), dg.AssetKey("base_embeddings")}, asset_check_selection=set())


@pytest.fixture(scope="module")
def headlines() -> pl.DataFrame:
    """Distinct BBC News headlines with their article ids: short real texts that encode fast."""
    articles = load_bbc_news().with_columns(pl.col("text").str.split("\n").list.first().alias("text"))
    return articles.unique(subset="text", keep="first", maintain_order=True).select("id", "text")


def _write_batches(data_dir: Path, headlines: pl.DataFrame, n_batches: int, per_batch: int) -> list[str]:
    texts_dir = data_dir / "texts"
    texts_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    for batch in range(n_batches):
        key = f"batch_{batch:02d}.csv"
        headlines.slice(batch * per_batch, per_batch).write_csv(texts_dir / key)
        keys.append(key)
    return keys


def _run_config(data_dir: Path) -> dict:
    """Point the resources at ``data_dir`` and run steps in processes forked from a preloaded server.

    The server imports the definitions and sentence-transformers once, so each step process
    starts in well under a second.
    """
    return {
        "execution": {
            "config": {
                "multiprocess": {
                    "max_concurrent": CONCURRENT_STEPS,
                    "start_method": {
                        "forkserver": {"preload_modules": ["embetter_assets.definitions", "sentence_transformers"]}
                    },
                }
            }
        },
        "resources": {
            "store": {"config": {"path": str(data_dir / "embetter.duckdb")}},
            "folders": {"config": {"root": str(data_dir)}},
        },
    }


def _count(store_path: Path, sql: str, parameters: list | None = None) -> int:
    return EmbeddingStore(store_path).query(sql, parameters)[0, 0]


# ----------------------------------------------------------------- backfill


def run_partition(key: str, data_dir: str, dagster_home: str, label: str) -> tuple[str, bool, list[str]]:
    """Execute the backfill job for one partition, as the backfill daemon's run worker would.

    Runs in a worker process of its own: Dagster sets up logging per run in a way that is not
    safe across threads of one process.
    """
    with (
        dg.DagsterInstance.from_config(dagster_home) as instance,
        dg.execute_job(
            _backfill_job(),
            instance=instance,
            run_config=_run_config(Path(data_dir)),
            tags={"dagster/partition": key, "embetter/backfill": label},
        ) as result,
    ):
        failures = [str(event.message) for event in result.all_events if event.is_failure]
        return key, result.success, failures


def _step_intervals(instance: dg.DagsterInstance, runs) -> list[tuple[float, float]]:
    """Return (start, end) timestamps of every step of ``runs``, from their Dagster events."""
    intervals = []
    for run in runs:
        started = {}
        for entry in instance.all_logs(run.run_id, of_type={dg.DagsterEventType.STEP_START, dg.DagsterEventType.STEP_SUCCESS}):
            if entry.dagster_event.event_type == dg.DagsterEventType.STEP_START:
                started[entry.step_key] = entry.timestamp
            else:
                intervals.append((started[entry.step_key], entry.timestamp))
    return intervals


def _max_overlap(intervals: list[tuple[float, float]]) -> int:
    """Return the largest number of intervals open at one moment."""
    edges = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    open_now = maximum = 0
    for _, change in edges:
        open_now += change
        maximum = max(maximum, open_now)
    return maximum


@pytest.fixture(scope="module")
def run_workers():
    """Four worker processes forked from a server that has imported the definitions once."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["embetter_assets.definitions"])
    with ProcessPoolExecutor(max_workers=CONCURRENT_STEPS, mp_context=context) as pool:
        yield pool


def test_backfill_multiprocess_no_lock_errors(tmp_path, headlines, run_workers):
    for repeat in range(REPEATS):
        data_dir = tmp_path / f"repeat_{repeat}"
        keys = _write_batches(data_dir, headlines.slice(repeat * 7), N_PARTITIONS, TEXTS_PER_PARTITION)
        home = tmp_path / f"dagster_home_{repeat}"
        home.mkdir()
        with dg.instance_for_test(temp_dir=str(home)) as instance:
            instance.add_dynamic_partitions(text_batches.name, keys)
            futures = [run_workers.submit(run_partition, key, str(data_dir), str(home), f"repeat-{repeat}") for key in keys]
            outcomes = [future.result(timeout=300) for future in futures]
            runs = instance.get_runs()
            steps = _step_intervals(instance, runs)

        store_path = data_dir / "embetter.duckdb"
        failures = [message for _, _, messages in outcomes for message in messages]
        assert [success for _, success, _ in outcomes] == [True] * N_PARTITIONS, failures
        assert not any("lock" in message.lower() for message in failures)
        assert len(runs) == N_PARTITIONS
        assert _max_overlap(steps) >= 2, "no two steps ran at the same time, so nothing competed for the file"
        assert _count(store_path, "SELECT count(*) FROM texts") == N_PARTITIONS * TEXTS_PER_PARTITION
        assert _count(store_path, "SELECT count(DISTINCT batch) FROM texts") == N_PARTITIONS
        assert _count(store_path, "SELECT count(*) FROM base_embeddings") == N_PARTITIONS * TEXTS_PER_PARTITION


# ----------------------------------------------------------------- a long write, a reader, then SIGKILL

KILL_TEXTS = 400
KILL_CHUNK = 20
READS_DURING_WRITE = 5
# A reader waits for at most one chunk's write transaction; a few seconds covers a slow machine.
MAX_READ_SECONDS = 5.0

_WRITER = textwrap.dedent(
    """
    import sys
    import dagster as dg
    import embetter_assets.defs.assets.texts as texts_module
    from embetter_assets.definitions import ALL_ASSETS
    from embetter_assets.defs.partitions import text_batches
    from embetter_assets.defs.refresh import default_resources

    texts_module.ENCODE_CHUNK_SIZE = int(sys.argv[3])
    data_dir, key = sys.argv[1], sys.argv[2]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(text_batches.name, [key])
    print("materializing", flush=True)
    dg.materialize(ALL_ASSETS, selection=["raw_texts", "base_embeddings"], partition_key=key,
                   instance=instance, resources=default_resources(data_dir))
    print("finished", flush=True)
    """
)


def _timed_count(store_path: Path, table: str) -> tuple[int | None, float]:
    """Count rows from this process with a read-only connection; return the count and the seconds taken."""
    started = time.perf_counter()
    store = EmbeddingStore(store_path, lock_timeout=30)
    count = store.query(f"SELECT count(*) FROM {table}")[0, 0] if store.table_exists(table) else None
    return count, time.perf_counter() - started


@pytest.fixture(scope="module")
def killed_writer(tmp_path_factory, headlines):
    """Start a long base_embeddings materialization in a subprocess, read during it, then SIGKILL it.

    Returns the data folder, the partition key, the read latencies measured during the
    write, and the rows stored when the writer died.
    """
    data_dir = tmp_path_factory.mktemp("killed")
    key = "long_batch.csv"
    (data_dir / "texts").mkdir()
    headlines.slice(300, KILL_TEXTS).write_csv(data_dir / "texts" / key)
    store_path = data_dir / "embetter.duckdb"

    environment = {**os.environ, "EMBETTER_DUCKDB_PATH": str(store_path), "EMBETTER_AUTOMATION": "stopped"}
    writer = subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(data_dir), key, str(KILL_CHUNK)],
        env=environment,
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240
        stored = None
        while (stored or 0) < 2 * KILL_CHUNK:
            assert writer.poll() is None, "the writer finished or died before it wrote two chunks"
            assert time.monotonic() < deadline, "the writer wrote no two chunks within 240 s"
            time.sleep(0.2)
            stored, _ = _timed_count(store_path, "base_embeddings")

        latencies = []
        for _ in range(READS_DURING_WRITE):
            count, seconds = _timed_count(store_path, "base_embeddings")
            latencies.append((count, seconds))
        still_running = writer.poll() is None
        os.kill(writer.pid, signal.SIGKILL)
        writer.wait(timeout=30)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()

    rows_at_kill, _ = _timed_count(store_path, "base_embeddings")
    return {
        "data_dir": data_dir,
        "key": key,
        "latencies": latencies,
        "still_running": still_running,
        "returncode": writer.returncode,
        "rows_at_kill": rows_at_kill,
    }


def test_reader_answers_during_long_write(killed_writer):
    counts = [count for count, _ in killed_writer["latencies"]]

    assert killed_writer["still_running"], "the writer finished before the reads; raise KILL_TEXTS"
    assert all(count is not None and count >= 2 * KILL_CHUNK for count in counts)
    assert counts == sorted(counts)
    assert max(seconds for _, seconds in killed_writer["latencies"]) < MAX_READ_SECONDS


def test_killed_write_reruns_to_exact_counts(killed_writer):
    from embetter_assets.definitions import ALL_ASSETS
    from embetter_assets.defs.refresh import default_resources

    data_dir, key = killed_writer["data_dir"], killed_writer["key"]
    store_path = data_dir / "embetter.duckdb"
    expected = read_text_batch(data_dir / "texts" / key)
    rows_at_kill = killed_writer["rows_at_kill"]
    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(text_batches.name, [key])

    result = dg.materialize(
        ALL_ASSETS,
        selection=["raw_texts", "base_embeddings"],
        partition_key=key,
        instance=instance,
        resources=default_resources(data_dir) | {"store": StoreResource(path=str(store_path))},
    )
    encoded = result.asset_materializations_for_node("base_embeddings")[0].metadata["encoded"].value

    assert killed_writer["returncode"] == -signal.SIGKILL
    assert rows_at_kill % KILL_CHUNK == 0
    assert 2 * KILL_CHUNK <= rows_at_kill < KILL_TEXTS
    assert encoded == KILL_TEXTS - rows_at_kill
    assert _count(store_path, "SELECT count(*) FROM texts") == KILL_TEXTS
    assert _count(store_path, "SELECT count(*) FROM base_embeddings") == KILL_TEXTS
    stored_hashes = set(EmbeddingStore(store_path).query("SELECT content_hash FROM base_embeddings")["content_hash"])
    assert stored_hashes == set(expected["content_hash"])


# ----------------------------------------------------------------- replacing a partition under a reader

_REPLACER = textwrap.dedent(
    """
    import sys
    import polars as pl
    from embetter_assets.ingest import content_hash
    from embetter_assets.store import EmbeddingStore

    store = EmbeddingStore(sys.argv[1])
    sizes = [int(size) for size in sys.argv[2].split(",")]
    for round_number in range(int(sys.argv[3])):
        size = sizes[round_number % len(sizes)]
        texts = [f"round {round_number} text {row}" for row in range(size)]
        store.replace_text_batch("batch.csv", pl.DataFrame({
            "text_id": [f"t{row}" for row in range(size)],
            "row_number": pl.Series(range(1, size + 1), dtype=pl.Int32),
            "content_hash": [content_hash(text) for text in texts],
            "text": texts,
            "source_file": ["batch.csv"] * size,
        }))
    print("done", flush=True)
    """
)


def test_reader_never_sees_half_replaced_batch(tmp_path):
    store_path = tmp_path / "store.duckdb"
    sizes = (300, 1000)
    seen = []
    replacer = subprocess.Popen(
        [sys.executable, "-c", _REPLACER, str(store_path), ",".join(map(str, sizes)), "12"],
        cwd=REPOSITORY,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        while replacer.poll() is None:
            if store_path.exists() and EmbeddingStore(store_path, lock_timeout=30).table_exists("texts"):
                frame = EmbeddingStore(store_path, lock_timeout=30).query(
                    "SELECT count(*) AS n, count(DISTINCT split_part(text, ' text ', 1)) AS rounds FROM texts"
                )
                seen.append((frame["n"][0], frame["rounds"][0]))
            time.sleep(0.01)
        _, errors = replacer.communicate(timeout=60)
    finally:
        if replacer.poll() is None:
            replacer.kill()

    assert replacer.returncode == 0, errors.decode()
    assert len(seen) >= 3
    assert {count for count, _ in seen} <= set(sizes)
    assert {rounds for _, rounds in seen} == {1}
