"""Measure how well an embedding space separates the labelled classes, and chart it."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.decomposition import PCA  # noqa: E402
from sklearn.linear_model import LogisticRegression  # noqa: E402
from sklearn.metrics import accuracy_score, f1_score, silhouette_score  # noqa: E402


def score_space(X_train: np.ndarray, y_train, X_test: np.ndarray, y_test) -> dict[str, float]:
    """Score one embedding space on held-out labels.

    A logistic regression trained on ``X_train`` predicts ``X_test``: its accuracy and
    macro-F1 say how useful the space is for a downstream model. The cosine silhouette of
    ``X_test`` under its true labels says how far apart the classes lie, which is what
    bulk labelling by region needs.
    """
    classifier = LogisticRegression(max_iter=2000)
    classifier.fit(X_train, y_train)
    predicted = classifier.predict(X_test)
    scores = {
        "accuracy": float(accuracy_score(y_test, predicted)),
        "macro_f1": float(f1_score(y_test, predicted, average="macro")),
    }
    n_classes = len(np.unique(y_test))
    if 2 <= n_classes < len(y_test):
        scores["cosine_silhouette"] = float(silhouette_score(X_test, y_test, metric="cosine"))
    return scores


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
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    plt.close(figure)
    return path
