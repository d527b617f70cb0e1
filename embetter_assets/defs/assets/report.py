"""The evaluation report: does the finetuned space separate the classes better than the base one?"""

import dagster as dg
import polars as pl

from embetter_assets.defs.assets.finetuner import finetuned_embeddings, trained_finetuner
from embetter_assets.defs.metadata import inline_png, markdown_table
from embetter_assets.defs.resources import DataFoldersResource, StoreResource
from embetter_assets.evaluation import plot_pca, score_space
from embetter_assets.finetune import load_finetuner
from embetter_assets.labelsets import split_labels


@dg.asset(
    deps=[trained_finetuner, finetuned_embeddings],
    group_name="evaluation",
    kinds={"duckdb", "scikit-learn"},
    description=(
        "Held-out scores of the base and the newest finetuned embedding: logistic-regression accuracy and "
        "macro-F1, cosine silhouette, and PCA charts. Numbers in `evaluation_reports`, charts in `data/reports/`."
    ),
)
def evaluation_report(
    context: dg.AssetExecutionContext, store: StoreResource, folders: DataFoldersResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    stored = embedding_store.latest_finetuner()
    version = int(stored["version"])
    label_sets = split_labels(embedding_store.current_labels())
    train, test = label_sets.train, label_sets.test
    if test.height < 2 or test["label"].n_unique() < 2:
        raise ValueError(
            f"evaluation_report needs held-out labels of at least two classes; found {test.height} texts. "
            "Add a label batch with a split column holding 'test' rows, or more labels."
        )

    finetuner = load_finetuner(stored["weights"])
    model = stored["model"]
    base = {
        "train": embedding_store.base_embeddings(train["content_hash"].to_list(), model),
        "test": embedding_store.base_embeddings(test["content_hash"].to_list(), model),
    }
    spaces = {
        "base": base,
        "finetuned": {side: finetuner.transform(X) for side, X in base.items()},
    }
    y_train, y_test = train["label"].to_numpy(), test["label"].to_numpy()

    rows = []
    for space, X in spaces.items():
        scores = score_space(X["train"], y_train, X["test"], y_test)
        rows += [(space, metric, value) for metric, value in scores.items()]
        context.log.info(f"{space} embedding: " + ", ".join(f"{metric} {value:.3f}" for metric, value in scores.items()))
    metrics = pl.DataFrame(rows, schema=["space", "metric", "value"], orient="row")

    report_dir = folders.reports_dir / f"v{version}"
    charts = {
        space: plot_pca(X["test"], y_test, f"PCA of the {space} embedding (held-out texts)", report_dir / f"pca_{space}.png")
        for space, X in spaces.items()
    }
    embedding_store.add_report(version, metrics, {name: str(path) for name, path in charts.items()})

    table = metrics.pivot(on="space", index="metric", values="value")
    return dg.MaterializeResult(
        metadata={
            "finetuner_version": version,
            "train_texts": train.height,
            "test_texts": test.height,
            **{f"{space}_{metric}": round(value, 4) for space, metric, value in rows},
            "scores": dg.MetadataValue.md(markdown_table([tuple(_round(v) for v in row) for row in table.rows()], table.columns)),
            "pca_base": inline_png(charts["base"], "PCA of the base embedding"),
            "pca_finetuned": inline_png(charts["finetuned"], "PCA of the finetuned embedding"),
            "report_dir": dg.MetadataValue.path(str(report_dir)),
        }
    )


def _round(value):
    return round(value, 4) if isinstance(value, float) else value
