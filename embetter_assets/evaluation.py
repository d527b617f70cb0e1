"""Measure how well an embedding space separates the labelled classes, and chart it."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, silhouette_score  # noqa: E402
from sklearn.neighbors import KNeighborsClassifier  # noqa: E402

METRIC_LABELS = {
    "accuracy": "logistic regression accuracy",
    "macro_f1": "logistic regression macro-F1",
    "knn5_accuracy": "5-NN accuracy (cosine)",
    "cosine_silhouette": "cosine silhouette",
}


def score_space(X_train: np.ndarray, y_train, X_test: np.ndarray, y_test) -> dict[str, float]:
    """Score one embedding space on held-out labels.

    A logistic regression trained on ``X_train`` predicts ``X_test``: its accuracy and
    macro-F1 say how useful the space is for a downstream model. 5-nearest-neighbour accuracy
    under cosine distance says whether neighbours share a label, which similarity search
    relies on. The cosine silhouette of ``X_test`` under its true labels says how far apart
    the classes lie, which is what bulk labelling by region needs.
    """
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(X_train, y_train)
    predicted = classifier.predict(X_test)
    scores = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "macro_f1": float(f1_score(y_test, predicted, average="macro")),
    }
    if len(X_train) >= 5:
        neighbours = KNeighborsClassifier(n_neighbors=5, metric="cosine").fit(X_train, y_train)
        scores["knn5_accuracy"] = float(accuracy_score(y_test, neighbours.predict(X_test)))
    n_classes = len(np.unique(y_test))
    if 2 <= n_classes < len(y_test):
        scores["cosine_silhouette"] = float(silhouette_score(X_test, y_test, metric="cosine"))
    return scores


def recommend(scores: dict[str, dict[str, float]]) -> tuple[str, str]:
    """Pick the space to use and say why, in one line.

    ``scores`` maps a space name (``base`` and one entry per finetuner) to its
    :func:`score_space` result. A finetuner is recommended when its held-out logistic
    regression accuracy is at least the base embedding's; among those, the higher accuracy
    wins and the silhouette breaks ties. Otherwise the base embedding stays the choice for
    models, and the best-separating finetuner is named for bulk labelling only.
    """
    base = scores["base"]
    finetuners = {name: value for name, value in scores.items() if name != "base"}
    candidates = [name for name, value in finetuners.items() if value["accuracy"] >= base["accuracy"]]
    if candidates:
        best = max(candidates, key=lambda name: (finetuners[name]["accuracy"], finetuners[name].get("cosine_silhouette", 0.0)))
        chosen = finetuners[best]
        return best, (
            f"Use the {best} finetuner: held-out accuracy {chosen['accuracy']:.3f} vs {base['accuracy']:.3f} "
            f"for the base embedding, cosine silhouette {chosen.get('cosine_silhouette', float('nan')):.3f} "
            f"vs {base.get('cosine_silhouette', float('nan')):.3f}."
        )
    separating = max(finetuners, key=lambda name: finetuners[name].get("cosine_silhouette", 0.0))
    return "base", (
        f"Keep the base embedding for models: no finetuner reached its held-out accuracy "
        f"{base['accuracy']:.3f}. The {separating} finetuner still separates the classes best "
        f"(silhouette {finetuners[separating].get('cosine_silhouette', float('nan')):.3f}) for bulk labelling; "
        "more labels usually close the gap."
    )


def learning_curve(
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    sizes: Sequence[int],
    make_finetuner: Callable[[], object],
) -> list[dict]:
    """Score base and finetuned spaces when trained on the first ``n`` labels, for each size.

    Training rows must be in the order the labels arrived, so each point shows what the team
    had at that moment. Sizes whose first ``n`` rows hold fewer than two classes are skipped.
    """
    points = []
    for n in sizes:
        y_first = y_train[:n]
        if len(np.unique(y_first)) < 2:
            continue
        finetuner = make_finetuner().fit(X_train[:n], y_first)
        for space, (train, test) in {
            "base": (X_train[:n], X_test),
            "finetuned": (finetuner.transform(X_train[:n]), finetuner.transform(X_test)),
        }.items():
            classifier = LogisticRegression(max_iter=2000).fit(train, y_first)
            points.append({"n_labels": int(n), "space": space, "accuracy": float(classifier.score(test, y_test))})
    return points


def learning_curve_sizes(n_train: int, batch_boundaries: Sequence[int]) -> list[int]:
    """Return label counts to score: doubling steps from 20, each batch boundary, and all labels."""
    sizes = set(batch_boundaries) | {n_train}
    step = 20
    while step < n_train:
        sizes.add(step)
        step *= 2
    return sorted(size for size in sizes if 5 <= size <= n_train)


def plot_pca(X: np.ndarray, labels, title: str, path: Path) -> Path:
    """Save a scatter plot of the first two principal components, coloured by label."""
    points = PCA(n_components=2, random_state=0).fit_transform(X)
    labels = np.asarray(labels)
    figure, axes = plt.subplots(figsize=(6.4, 5.2), dpi=100)
    for index, label in enumerate(np.unique(labels)):
        chosen = labels == label
        axes.scatter(points[chosen, 0], points[chosen, 1], s=8, alpha=0.7, color=f"C{index % 10}", label=str(label))
    axes.set_title(title)
    axes.set_xlabel("first principal component")
    axes.set_ylabel("second principal component")
    axes.legend(markerscale=2, fontsize="small", loc="best")
    return _save(figure, path)


def plot_learning_curve(points: list[dict], title: str, path: Path) -> Path:
    """Save held-out accuracy against the number of training labels, one line per space."""
    figure, axes = plt.subplots(figsize=(6.4, 4.4), dpi=100)
    for index, space in enumerate(sorted({point["space"] for point in points})):
        chosen = [point for point in points if point["space"] == space]
        axes.plot(
            [point["n_labels"] for point in chosen],
            [point["accuracy"] for point in chosen],
            marker="o",
            color=f"C{index}",
            label=space,
        )
    axes.set_title(title)
    axes.set_xlabel("training labels")
    axes.set_ylabel("held-out logistic regression accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    return _save(figure, path)


def _save(figure, path: Path) -> Path:
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
