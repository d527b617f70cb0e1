"""Choose the unlabelled texts most worth labelling next, and write them as a fill-in CSV.

Texts where a classifier is least sure teach it the most, but the least-sure texts often
sit together: a queue of near-copies costs labelling time and teaches one thing. The
selection therefore does two steps:

1. Uncertainty: a logistic regression trained on the labelled texts' embeddings scores
   every unlabelled text by its margin, the gap between its two most probable classes.
   The ``size * pool_factor`` texts with the smallest margins form the pool.
2. Diversity: k-means splits the pool into ``size`` clusters, weighting each text by its
   uncertainty (``1 - margin``), and the least-sure text of each cluster joins the queue.

Both steps are deterministic for a given input order and ``random_state``. Nothing here
imports Dagster; the ``labelling_queue`` asset calls :func:`select_for_labelling`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
from sklearn.cluster import KMeans
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import normalize

DEFAULT_QUEUE_SIZE = 50
DEFAULT_POOL_FACTOR = 10

# The label-file columns (see ``ingest.read_label_batch``) plus the text to read while labelling.
QUEUE_CSV_COLUMNS = ["text_id", "label", "split", "text"]


class QueueFileError(RuntimeError):
    """Raised when writing the queue CSV would overwrite labels a user has filled in."""


@dataclass
class QueueSelection:
    """The chosen candidates in queue order, with what the classifier thought of them."""

    positions: np.ndarray
    """Row indices into the candidate matrix, most uncertain first."""
    margins: np.ndarray
    """Gap between the two most probable classes of each chosen text, from 0 to 1."""
    predicted_labels: np.ndarray
    """The classifier's most probable class for each chosen text."""
    pool_size: int
    """How many of the least-sure candidates were clustered."""


def classifier_margins(
    X_train: np.ndarray, y_train: np.ndarray, X_candidates: np.ndarray, *, random_state: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Fit a logistic regression on the labelled texts and score the candidates.

    Returns each candidate's margin (top class probability minus the runner-up's, so 0
    means a tie and 1 means certain) and its predicted class.
    """
    if len(np.unique(y_train)) < 2:
        raise ValueError(f"The labelling queue needs training labels of at least two classes, got {np.unique(y_train)}.")
    classifier = LogisticRegression(max_iter=1000, random_state=random_state).fit(X_train, y_train)
    probabilities = classifier.predict_proba(X_candidates)
    top_two = np.sort(probabilities, axis=1)[:, -2:]
    margins = top_two[:, 1] - top_two[:, 0]
    predicted = classifier.classes_[np.argmax(probabilities, axis=1)]
    return margins, predicted


def select_diverse(
    X: np.ndarray, margins: np.ndarray, size: int, *, pool_factor: int = DEFAULT_POOL_FACTOR, random_state: int = 0
) -> tuple[np.ndarray, int]:
    """Pick ``size`` rows of ``X`` that are uncertain and spread apart; return them and the pool size.

    The rows come back ordered by margin, smallest first, ties in input order. With no more
    candidates than ``size``, every candidate is returned.
    """
    if size < 1:
        raise ValueError(f"The queue size must be at least 1, got {size}.")
    if pool_factor < 1:
        raise ValueError(f"pool_factor must be at least 1, got {pool_factor}.")
    by_margin = np.argsort(margins, kind="stable")
    pool = by_margin[: size * pool_factor]
    if pool.size <= size:
        return pool, int(pool.size)

    # On unit vectors, Euclidean k-means groups by cosine similarity.
    X_pool = normalize(np.asarray(X[pool], dtype=np.float64))
    uncertainty = 1.0 - margins[pool] + 1e-6
    clusters = KMeans(n_clusters=size, n_init=3, random_state=random_state).fit_predict(X_pool, sample_weight=uncertainty)

    # The pool is sorted by margin, so the first pool row of each cluster is its least-sure text.
    _, first_rows = np.unique(clusters, return_index=True)
    chosen = list(pool[np.sort(first_rows)])
    if len(chosen) < size:
        # k-means can leave a cluster empty when the pool has fewer distinct vectors than
        # clusters. The next least-sure texts then fill the queue up to ``size``.
        already_chosen = set(chosen)
        chosen += [row for row in pool if row not in already_chosen][: size - len(chosen)]
    chosen = np.array(chosen)
    return chosen[np.argsort(margins[chosen], kind="stable")], int(pool.size)


def select_for_labelling(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_candidates: np.ndarray,
    *,
    size: int = DEFAULT_QUEUE_SIZE,
    pool_factor: int = DEFAULT_POOL_FACTOR,
    random_state: int = 0,
) -> QueueSelection:
    """Choose up to ``size`` candidates to label next: uncertain ones, spread across the space."""
    if X_candidates.shape[0] == 0:
        return QueueSelection(np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0, dtype=object), 0)
    margins, predicted = classifier_margins(X_train, y_train, X_candidates, random_state=random_state)
    positions, pool_size = select_diverse(
        X_candidates, margins, size, pool_factor=pool_factor, random_state=random_state
    )
    return QueueSelection(positions, margins[positions], predicted[positions], pool_size)


def write_queue_csv(queue: pl.DataFrame, path: Path) -> Path:
    """Write ``queue`` (``text_id`` and ``text``) as a label file to fill in: ``text_id,label,split,text``.

    The label column is empty and the split is ``train``. A filled-in copy dropped into the
    label folder loads as a label batch, which ignores the ``text`` column. An existing file
    at ``path`` that already contains a label is not overwritten, because it is probably
    someone's work in progress.
    """
    path = Path(path)
    if path.exists():
        _reject_filled_in(path)
    rows = queue.select(
        "text_id",
        pl.lit(None, dtype=pl.String).alias("label"),
        pl.lit("train").alias("split"),
        "text",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    rows.write_csv(partial)
    os.replace(partial, path)
    return path


def _reject_filled_in(path: Path) -> None:
    try:
        existing = pl.read_csv(path, infer_schema=False)
    except pl.exceptions.PolarsError:
        existing = None
    if existing is None or "label" not in existing.columns:
        return
    filled = existing["label"].str.strip_chars().str.len_chars().fill_null(0) > 0
    if filled.any():
        raise QueueFileError(
            f"{path} already has {int(filled.sum())} labels filled in, so it was not overwritten. Move it into "
            "the label folder to load those labels (rows left without a label are skipped), or delete it, then "
            "materialize labelling_queue again."
        )
