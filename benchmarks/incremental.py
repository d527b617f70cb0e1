"""Incremental builds: what an 11th text batch costs next to the full build of the first ten.

Run with ``make benchmark-incremental`` or ``.venv/bin/python benchmarks/incremental.py``.
Needs the tweets corpus at ``../shared/data/tweets_sentiment.parquet`` and exits with a
message when it is absent.

The 38,158 tweets are shuffled with a fixed seed. 1% of them are held back as new texts; the
other 99% form text batches 1 to 10. Batch 11 contains the new texts plus as many tweets of
batches 1-10 under new ids, so only its new texts need encoding. Every batch is a Parquet
file materialized through Dagster (``raw_texts`` then ``base_embeddings``, one run per batch,
all in one process, with the production resources) into a fresh DuckDB file.

Reported, all from one invocation:

- the full build of batches 1-10: wall time, texts encoded, peak resident memory of the
  process that ran it (``ru_maxrss``, which includes the imports and the loaded model);
- batch 11: wall time and texts encoded, and its time as a share of the full build;
- encoding throughput: the raw encoder (``SentenceEncoder.transform`` in a second process,
  on the texts each batch has to encode, right before or after that batch's run, so that
  both see the same machine load) against the pipeline, both as ``base_embeddings``' own encode-and-store
  loop (summed, and as the median of the per-batch ratios) and end to end (every run of the
  full build, model loads and Dagster included).

Targets: batch 11 encodes only its new texts and takes at most 3% of the full build; the
pipeline's encode-and-store loop reaches at least 0.95 times the raw encoder's throughput;
the full build's peak memory stays at or below 2 GB. The tables are printed and written to
the "Incremental builds" section of ``benchmarks/RESULTS.md``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from results_page import replace_section

REPOSITORY = Path(__file__).resolve().parents[1]
RESULTS_PATH = REPOSITORY / "benchmarks" / "RESULTS.md"
TWEETS_PATH = REPOSITORY.parent / "shared" / "data" / "tweets_sentiment.parquet"
SECTION_TITLE = "## Incremental builds"

SEED = 7
N_BATCHES = 10
NEW_FRACTION = 0.01
TARGET_SHARE = 0.03
TARGET_THROUGHPUT_RATIO = 0.95
TARGET_PEAK_BYTES = 2 * 1024**3


# ----------------------------------------------------------------- batch files


def write_batches(texts_dir: Path, fraction: float) -> dict:
    """Write text batches 1-10 and batch 11 as Parquet files; return their keys and expected counts."""
    import polars as pl

    from embetter_assets.ingest import content_hash

    tweets = pl.read_parquet(TWEETS_PATH, columns=["id", "text"]).sample(fraction=1.0, shuffle=True, seed=SEED)
    if fraction < 1.0:
        tweets = tweets.head(int(tweets.height * fraction))
    n_new = max(1, round(tweets.height * NEW_FRACTION))
    new, old = tweets.head(n_new), tweets.slice(n_new)

    texts_dir.mkdir(parents=True, exist_ok=True)
    keys = []
    batch_size = -(-old.height // N_BATCHES)
    for batch in range(N_BATCHES):
        key = f"tweets_{batch + 1:02d}.parquet"
        old.slice(batch * batch_size, batch_size).write_parquet(texts_dir / key)
        keys.append(key)

    repeated = old.sample(n=n_new, seed=SEED).with_columns(("again-" + pl.col("id")).alias("id"))
    eleventh = pl.concat([new, repeated]).sample(fraction=1.0, shuffle=True, seed=SEED)
    eleventh_key = f"tweets_{N_BATCHES + 1:02d}.parquet"
    eleventh.write_parquet(texts_dir / eleventh_key)

    old_hashes = {content_hash(text) for text in old["text"]}
    new_hashes = {content_hash(text) for text in new["text"]} - old_hashes
    return {
        "keys": keys,
        "eleventh_key": eleventh_key,
        "texts_in_batches": old.height,
        "distinct_texts_in_batches": len(old_hashes),
        "eleventh_texts": eleventh.height,
        "eleventh_new_distinct": len(new_hashes),
    }


# ----------------------------------------------------------------- child processes

# Each measurement runs in a long-lived child process that reads one request per stdin line
# and writes its result as one stdout line starting with this marker. Other output is log.
RESULT_MARKER = "RESULT "


def serve_builds(data_dir: Path, keys: list[str]) -> None:
    """Materialize one batch per request (``raw_texts`` then ``base_embeddings``) and report it."""
    import gc

    import dagster as dg

    from embetter_assets.definitions import ALL_ASSETS
    from embetter_assets.defs.partitions import text_batches
    from embetter_assets.defs.refresh import default_resources

    instance = dg.DagsterInstance.ephemeral()
    instance.add_dynamic_partitions(text_batches.name, keys)
    resources = default_resources(data_dir)
    for line in sys.stdin:
        key = line.strip()
        started = time.perf_counter()
        result = dg.materialize(
            ALL_ASSETS, selection=["raw_texts", "base_embeddings"], partition_key=key, instance=instance, resources=resources
        )
        seconds = time.perf_counter() - started
        # A run's resources keep their loaded model in reference cycles. A run's own process would
        # end here, so free them before the next run instead of letting models pile up.
        gc.collect()
        metadata = result.asset_materializations_for_node("base_embeddings")[0].metadata
        _answer(
            {
                "key": key,
                "seconds": seconds,
                "encoded": metadata["encoded"].value,
                "encode_seconds": metadata["encode_seconds"].value,
                "peak_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            }
        )


def serve_raw(data_dir: Path) -> None:
    """Encode, per request, the texts of one batch that no earlier batch had, with the bare encoder."""
    import polars as pl

    from embetter_assets.encoder import SentenceEncoder
    from embetter_assets.ingest import content_hash

    encoder = SentenceEncoder()
    encoder.transform(["warm up"])
    seen: set[str] = set()
    for line in sys.stdin:
        key = line.strip()
        texts = []
        for text in pl.read_parquet(data_dir / "texts" / key)["text"]:
            digest = content_hash(text)
            if digest not in seen:
                seen.add(digest)
                texts.append(text)
        started = time.perf_counter()
        encoder.transform(texts)
        _answer({"key": key, "texts": len(texts), "seconds": time.perf_counter() - started})


def _answer(result: dict) -> None:
    print(RESULT_MARKER + json.dumps(result), flush=True)


class Child:
    """This script started as a child process in serving mode, to send requests to."""

    def __init__(self, *arguments: str):
        self.process = subprocess.Popen(
            [sys.executable, __file__, "--child", *arguments],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "EMBETTER_AUTOMATION": "stopped"},
        )

    def request(self, key: str) -> dict:
        """Send one batch key and wait for the child's result."""
        self.process.stdin.write(key + "\n")
        self.process.stdin.flush()
        for line in self.process.stdout:
            if line.startswith(RESULT_MARKER):
                return json.loads(line[len(RESULT_MARKER) :])
        raise RuntimeError(f"Child process {self.process.args[3:5]} ended with code {self.process.wait()} before returning a result.")

    def close(self) -> None:
        """Let the child finish and wait for it."""
        self.process.stdin.close()
        self.process.wait(timeout=60)


# ----------------------------------------------------------------- report


def summarise(batches: dict, full: list[dict], eleventh: dict, raw: list[dict]) -> dict:
    """Turn the measurements into the reported figures and target checks."""
    full_seconds = sum(run["seconds"] for run in full)
    full_encoded = sum(run["encoded"] for run in full)
    loop_seconds = sum(run["encode_seconds"] for run in full)
    raw_texts = sum(run["texts"] for run in raw)
    raw_seconds = sum(run["seconds"] for run in raw)
    # The two sides of a pair ran back to back. A load spike from other processes usually hits
    # one side of a pair only, so the median over the pairs is the robust figure.
    paired = sorted(
        (build["encoded"] / build["encode_seconds"]) / (encoded["texts"] / encoded["seconds"])
        for build, encoded in zip(full, raw)
        if build["encoded"] and encoded["texts"]
    )
    return {
        "paired_ratios": paired,
        "median_ratio": statistics.median(paired),
        "full_seconds": full_seconds,
        "full_encoded": full_encoded,
        "peak_bytes": full[-1]["peak_bytes"],
        "eleventh_seconds": eleventh["seconds"],
        "eleventh_encoded": eleventh["encoded"],
        "eleventh_expected": batches["eleventh_new_distinct"],
        "share": eleventh["seconds"] / full_seconds,
        "raw_texts": raw_texts,
        "raw_rate": raw_texts / raw_seconds,
        "loop_rate": full_encoded / loop_seconds,
        "end_to_end_rate": full_encoded / full_seconds,
    }


def render_section(batches: dict, figures: dict, fraction: float) -> str:
    """Render the figures as the RESULTS.md section, with the command, date and machine."""
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    loop_ratio = figures["loop_rate"] / figures["raw_rate"]
    end_ratio = figures["end_to_end_rate"] / figures["raw_rate"]
    corpus = "all 38,158 tweets" if fraction >= 1.0 else f"a {fraction:.0%} sample of the tweets"
    yes_no = {True: "yes", False: "no"}
    lines = [
        SECTION_TITLE,
        "",
        f"{corpus.capitalize()}, shuffled with seed {SEED}: 1% held back as new texts, the rest split into "
        f"{N_BATCHES} Parquet text batches ({batches['texts_in_batches']:,} tweets, "
        f"{batches['distinct_texts_in_batches']:,} distinct). Batch 11 contains the {batches['eleventh_texts'] // 2:,} new "
        "tweets and as many tweets of batches 1-10 under new ids. Each batch is one Dagster run of `raw_texts` "
        "and `base_embeddings` with the production resources, into a fresh DuckDB file, all runs in one process "
        "that collects garbage after each run (as a run's own process would end). Next to each of batches 1-10 "
        "(before and after it in turn), a second process encodes the same texts (those of the batch that no "
        "earlier batch had) with the bare `SentenceEncoder.transform`, so both are measured under the same load. Peak memory is `ru_maxrss` of "
        "the build process after batch 10, imports and model included. The throughput target is checked on "
        "the median of the per-batch ratios, because other processes on the machine slow down single "
        "measurements.",
        "",
        f"Command: `.venv/bin/python benchmarks/incremental.py{'' if fraction >= 1.0 else f' --fraction {fraction:g}'}` "
        f"(or `make benchmark-incremental`), run {datetime.date.today().isoformat()} on {platform.processor() or platform.machine()} "
        f"({os.cpu_count()} cores, load average {load} over 1 / 5 / 15 min at the end), Python {platform.python_version()}.",
        "",
        "| build | wall s | texts encoded | share of full build | target | meets target |",
        "| --- | ---: | ---: | ---: | --- | --- |",
        f"| batches 1-10 (full build) | {figures['full_seconds']:.1f} | {figures['full_encoded']:,} | 100% | "
        f"peak memory <= 2 GB: {figures['peak_bytes'] / 1024**3:.2f} GB | "
        f"{yes_no[figures['peak_bytes'] <= TARGET_PEAK_BYTES]} |",
        f"| batch 11 | {figures['eleventh_seconds']:.1f} | {figures['eleventh_encoded']:,} of "
        f"{batches['eleventh_texts']:,} ({figures['eleventh_expected']:,} new) | {figures['share']:.2%} | "
        f"<= {TARGET_SHARE:.0%}, only new texts | "
        f"{yes_no[figures['share'] <= TARGET_SHARE and figures['eleventh_encoded'] == figures['eleventh_expected']]} |",
        "",
        "| encoding throughput | texts/s | / raw encoder | target | meets target |",
        "| --- | ---: | ---: | --- | --- |",
        f"| raw encoder, same texts | {figures['raw_rate']:.1f} | 1.00 |  |  |",
        f"| pipeline: `base_embeddings` encode-and-store loop, all batches | {figures['loop_rate']:.1f} | "
        f"{loop_ratio:.2f} |  |  |",
        f"| pipeline: the same loop, median of the {len(figures['paired_ratios'])} per-batch pairs "
        f"(range {figures['paired_ratios'][0]:.2f}-{figures['paired_ratios'][-1]:.2f}) |  | "
        f"{figures['median_ratio']:.2f} | >= {TARGET_THROUGHPUT_RATIO:.2f} | "
        f"{yes_no[figures['median_ratio'] >= TARGET_THROUGHPUT_RATIO]} |",
        f"| pipeline end to end: every run of the full build | {figures['end_to_end_rate']:.1f} | {end_ratio:.2f} |  |  |",
        "",
    ]
    return "\n".join(lines)


def write_section(section: str) -> None:
    """Replace the "Incremental builds" section of RESULTS.md, keeping every other section."""
    replace_section(SECTION_TITLE, section, RESULTS_PATH)


def main(argv: list[str] | None = None) -> None:
    """Write the batches, run the measurements in child processes, print and record the results."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fraction", type=float, default=1.0, help="share of the tweets to use, for a quick run (default 1)")
    parser.add_argument("--no-write", action="store_true", help="print the results without updating RESULTS.md")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.child:
        kind, data_dir, *rest = args.child
        if kind == "build":
            serve_builds(Path(data_dir), json.loads(rest[0]))
        else:
            serve_raw(Path(data_dir))
        return

    if not TWEETS_PATH.exists():
        sys.exit(f"Skipping: the tweets corpus {TWEETS_PATH} is absent; this benchmark needs it.")
    if not 0 < args.fraction <= 1:
        sys.exit(f"--fraction must be in (0, 1], got {args.fraction}.")

    with tempfile.TemporaryDirectory(prefix="embetter-incremental-") as folder:
        data_dir = Path(folder) / "data"
        batches = write_batches(data_dir / "texts", args.fraction)
        print(f"Wrote {N_BATCHES} batches of {batches['texts_in_batches']:,} tweets and batch 11 of {batches['eleventh_texts']:,}", flush=True)

        raw_encoder = Child("raw", str(data_dir))
        builder = Child("build", str(data_dir), json.dumps([*batches["keys"], batches["eleventh_key"]]))
        try:
            raw, full = [], []
            for number, key in enumerate(batches["keys"]):
                # Alternate which side of a pair runs first, so neither always meets the other's leftovers.
                if number % 2 == 0:
                    raw.append(raw_encoder.request(key))
                    full.append(builder.request(key))
                else:
                    full.append(builder.request(key))
                    raw.append(raw_encoder.request(key))
                print(
                    f"{key}: raw encoder {raw[-1]['texts'] / raw[-1]['seconds']:.1f} texts/s, pipeline run "
                    f"{full[-1]['seconds']:.1f} s for {full[-1]['encoded']} texts "
                    f"({full[-1]['encoded'] / full[-1]['encode_seconds']:.1f} texts/s in the encode loop)",
                    flush=True,
                )
            eleventh = builder.request(batches["eleventh_key"])
            print(f"{batches['eleventh_key']}: {eleventh['seconds']:.1f} s for {eleventh['encoded']} texts", flush=True)
        finally:
            raw_encoder.close()
            builder.close()

    figures = summarise(batches, full, eleventh, raw)
    section = render_section(batches, figures, args.fraction)
    print(section)
    if not args.no_write:
        write_section(section)
        print(f"Updated {RESULTS_PATH}")


if __name__ == "__main__":
    main()
