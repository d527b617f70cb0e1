"""The evaluation report: does finetuning help on the user's own labels, and which finetuner?"""

import dagster as dg
import numpy as np
import polars as pl
from sklearn.base import clone

from embetter_assets.defs.assets.finetuner import FINETUNER_KINDS, finetuned_embeddings, trained_finetuner
from embetter_assets.defs.automation import after_new_finetuner
from embetter_assets.defs.metadata import inline_png, markdown_table
from embetter_assets.defs.resources import DataFoldersResource, StoreResource
from embetter_assets.evaluation import (
    METRIC_LABELS,
    learning_curve,
    learning_curve_sizes,
    plot_learning_curve,
    plot_pca,
    recommend,
    score_space,
)
from embetter_assets.finetune import load_finetuner
from embetter_assets.labelsets import split_labels
from embetter_assets.report_page import write_report_page

NOT_WORSE_CHECK = "finetuned_not_worse_than_base"


@dg.asset(
    deps=[trained_finetuner, finetuned_embeddings],
    group_name="evaluation",
    automation_condition=after_new_finetuner(),
    kinds={"duckdb", "scikit-learn"},
    check_specs=[
        dg.AssetCheckSpec(
            NOT_WORSE_CHECK,
            asset="evaluation_report",
            description="Fails when the newest finetuner's held-out accuracy is below the base embedding's.",
        )
    ],
    description=(
        "Held-out scores of the base embedding and of both finetuners trained on the same labels "
        "(logistic-regression accuracy and macro-F1, 5-NN accuracy, cosine silhouette), a recommendation, "
        "PCA charts and a learning curve. Numbers in `evaluation_reports`, `evaluation_summaries` and "
        "`learning_curves`; charts and an HTML page in `data/reports/v<version>/`."
    ),
)
def evaluation_report(
    context: dg.AssetExecutionContext, store: StoreResource, folders: DataFoldersResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    stored = embedding_store.latest_finetuner()
    version, kind, model = int(stored["version"]), stored["kind"], stored["model"]
    label_sets = split_labels(embedding_store.current_labels())
    train, test = label_sets.train, label_sets.test
    if test.height < 2 or test["label"].n_unique() < 2:
        raise ValueError(
            f"evaluation_report needs held-out labels of at least two classes; found {test.height} texts. "
            "Add a label batch with a split column holding 'test' rows, or more labels."
        )

    unseen = sorted(set(test["label"].to_list()) - set(train["label"].to_list()))
    if unseen:
        context.log.warning(
            f"{test['label'].is_in(unseen).sum()} held-out texts belong to classes with no training text "
            f"({', '.join(repr(label) for label in unseen)}). No space can predict them, so they lower every "
            "score alike; label training texts of those classes or drop them from the held-out labels."
        )
    X_train = embedding_store.base_embeddings(train["content_hash"].to_list(), model)
    X_test = embedding_store.base_embeddings(test["content_hash"].to_list(), model)
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()

    # The stored finetuner is scored as trained; the other kind is trained here on the same
    # labels with its defaults, so the report can say which approach suits these labels.
    finetuners = {kind: load_finetuner(stored["weights"])}
    for other_kind, finetuner_class in FINETUNER_KINDS.items():
        if other_kind not in finetuners:
            context.log.info(f"Training a {other_kind} finetuner with its defaults for comparison")
            random_state = finetuners[kind].get_params().get("random_state")
            finetuners[other_kind] = finetuner_class(random_state=random_state).fit(X_train, y_train)

    spaces = {"base": (X_train, X_test)}
    spaces |= {name: (tuner.transform(X_train), tuner.transform(X_test)) for name, tuner in finetuners.items()}
    scores = {space: score_space(train_X, y_train, test_X, y_test) for space, (train_X, test_X) in spaces.items()}
    for space, values in scores.items():
        context.log.info(f"{space}: " + ", ".join(f"{metric} {value:.3f}" for metric, value in values.items()))
    recommended_space, recommendation = recommend(scores)
    context.log.info(recommendation)

    context.log.info(f"Computing the learning curve of the {kind} finetuner")
    boundaries = np.cumsum(train.group_by("batch", maintain_order=True).len()["len"].to_numpy()).tolist()
    curve = learning_curve(
        X_train, y_train, X_test, y_test, learning_curve_sizes(train.height, boundaries), lambda: clone(finetuners[kind])
    )

    report_dir = folders.reports_dir / f"v{version}"
    charts = {
        f"pca_{space}": plot_pca(test_X, y_test, f"PCA of the {space} embedding (held-out texts)", report_dir / f"pca_{space}.png")
        for space, (_, test_X) in spaces.items()
    }
    charts["learning_curve"] = plot_learning_curve(
        curve, f"Held-out accuracy as labels arrived ({kind} finetuner)", report_dir / "learning_curve.png"
    )

    metric_names = list(scores["base"])
    table_rows = [[METRIC_LABELS[metric]] + [scores[space].get(metric) for space in spaces] for metric in metric_names]
    page = write_report_page(
        report_dir / "report.html",
        title=f"Evaluation of finetuner version {version} ({kind})",
        recommendation=recommendation,
        columns=["metric", *spaces],
        rows=table_rows,
        facts={
            "training texts": train.height,
            "held-out texts": test.height,
            "classes": ", ".join(sorted(map(str, np.unique(y_train)))),
            "encoder model": model,
            **{name.replace("_", " "): value for name, value in label_sets.counts.items() if "dropped" in name or "also" in name},
        },
        charts=charts,
    )

    metrics = pl.DataFrame(
        [(space, metric, value) for space, values in scores.items() for metric, value in values.items()],
        schema=["space", "metric", "value"],
        orient="row",
    )
    embedding_store.add_report(
        version,
        metrics=metrics,
        learning_curve=pl.DataFrame(curve, schema={"n_labels": pl.Int64, "space": pl.String, "accuracy": pl.Float64}),
        charts={name: str(path) for name, path in charts.items() | {"page": page}.items()},
        summary={
            "kind": kind,
            "recommended_space": recommended_space,
            "recommendation": recommendation,
            "train_texts": train.height,
            "test_texts": test.height,
            "page_path": str(page),
        },
    )

    finetuned, base = scores[kind]["accuracy"], scores["base"]["accuracy"]
    return dg.MaterializeResult(
        metadata={
            "finetuner_version": version,
            "finetuner_kind": kind,
            "held_out_classes_without_training_texts": dg.MetadataValue.json(unseen),
            "recommendation": dg.MetadataValue.md(f"**{recommendation}**"),
            "train_texts": train.height,
            "test_texts": test.height,
            "base_accuracy": round(base, 4),
            "finetuned_accuracy": round(finetuned, 4),
            "base_cosine_silhouette": round(scores["base"].get("cosine_silhouette", float("nan")), 4),
            "finetuned_cosine_silhouette": round(scores[kind].get("cosine_silhouette", float("nan")), 4),
            "scores": dg.MetadataValue.md(
                markdown_table([tuple(_rounded(value) for value in row) for row in table_rows], ["metric", *spaces])
            ),
            **{name: inline_png(path, name.replace("_", " ")) for name, path in charts.items()},
            "report_page": dg.MetadataValue.path(str(page)),
        },
        check_results=[
            dg.AssetCheckResult(
                check_name=NOT_WORSE_CHECK,
                passed=finetuned >= base,
                severity=dg.AssetCheckSeverity.ERROR,
                metadata={"base_accuracy": round(base, 4), "finetuned_accuracy": round(finetuned, 4)},
                description=(
                    f"{kind} finetuner accuracy {finetuned:.3f} vs base {base:.3f} on {test.height} held-out texts"
                ),
            )
        ],
    )


def _rounded(value):
    return round(value, 4) if isinstance(value, float) else value
