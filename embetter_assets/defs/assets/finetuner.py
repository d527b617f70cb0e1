"""The trained finetuner and the finetuned embeddings it produces."""

import time
from typing import Literal

import dagster as dg
import numpy as np
from pydantic import Field

from embetter_assets.defs.assets.labels import class_counts, labelled_subset
from embetter_assets.defs.assets.texts import base_embeddings
from embetter_assets.defs.automation import after_new_labels, per_batch_eager, prune_withdrawn_label_batches
from embetter_assets.defs.partitions import text_batches
from embetter_assets.defs.resources import EncoderResource, StoreResource
from embetter_assets.finetune import ContrastiveFinetuner, FeedForwardFinetuner, load_finetuner
from embetter_assets.labelsets import split_labels

FINETUNER_KINDS = {"feedforward": FeedForwardFinetuner, "contrastive": ContrastiveFinetuner}


class FinetunerConfig(dg.Config):
    """Run configuration of ``trained_finetuner``; unset values take the finetuner's defaults."""

    kind: Literal["feedforward", "contrastive"] = Field(
        default="feedforward",
        description="feedforward: the hidden layer of a classifier; contrastive: a projection trained on pairs.",
    )
    hidden_dim: int | None = Field(default=None, description="Width of the finetuned embedding.")
    n_epochs: int | None = Field(default=None, description="Maximum passes over the training labels.")
    learning_rate: float | None = Field(default=None, description="Step size of the optimiser.")
    random_state: int = Field(default=0, description="Seed that makes training reproducible.")

    def build(self):
        """Return an unfitted finetuner with the configured parameters."""
        params = {
            name: value
            for name, value in self.model_dump().items()
            if name != "kind" and value is not None
        }
        return FINETUNER_KINDS[self.kind](**params)


@dg.asset(
    deps=[labelled_subset, base_embeddings],
    group_name="finetuning",
    automation_condition=after_new_labels(),
    kinds={"pytorch", "duckdb"},
    description=(
        "A finetuner trained on every current training label, stored as a new version in the "
        "`finetuners` table with its weights."
    ),
)
def trained_finetuner(
    context: dg.AssetExecutionContext, config: FinetunerConfig, store: StoreResource, encoder: EncoderResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    withdrawn = prune_withdrawn_label_batches(context, embedding_store)
    label_sets = split_labels(embedding_store.current_labels())
    train = label_sets.train
    if train["label"].n_unique() < 2:
        raise ValueError(
            f"trained_finetuner needs training labels of at least two classes; found {train.height} texts "
            f"with classes {sorted(train['label'].unique().to_list())}. Add a label batch."
        )

    X_train = embedding_store.base_embeddings(train["content_hash"].to_list(), encoder.model)
    finetuner = config.build()
    context.log.info(
        f"Training a {config.kind} finetuner on {train.height} texts, {train['label'].n_unique()} classes, "
        f"{X_train.shape[1]} input dimensions"
    )
    started = time.perf_counter()
    finetuner.fit(X_train, train["label"].to_numpy())
    seconds = time.perf_counter() - started

    label_batches = sorted(embedding_store.current_labels()["batch"].unique().to_list())
    version = embedding_store.add_finetuner(
        kind=config.kind,
        params=finetuner.get_params(),
        model=encoder.model,
        input_dim=int(X_train.shape[1]),
        output_dim=int(finetuner.n_features_out_),
        classes=list(finetuner.classes_),
        n_train=train.height,
        label_batches=label_batches,
        weights=finetuner.to_bytes(),
    )
    context.log.info(f"Stored finetuner version {version} after {seconds:.1f} s of training")
    return dg.MaterializeResult(
        metadata={
            "version": version,
            "kind": config.kind,
            "params": dg.MetadataValue.json(finetuner.get_params()),
            "output_dim": int(finetuner.n_features_out_),
            "fit_seconds": round(seconds, 2),
            "label_batches": dg.MetadataValue.json(label_batches),
            "withdrawn_label_rows_deleted": sum(withdrawn.values()),
            "train_labels_per_class": dg.MetadataValue.json(class_counts(train)),
            **label_sets.counts,
        }
    )


@dg.asset(
    partitions_def=text_batches,
    deps=[trained_finetuner, base_embeddings],
    group_name="finetuning",
    automation_condition=per_batch_eager(),
    kinds={"pytorch", "duckdb"},
    description=(
        "Finetuned embeddings of one text batch from the newest finetuner, in `finetuned_embeddings` keyed "
        "by (content hash, finetuner version). Only missing pairs are computed."
    ),
)
def finetuned_embeddings(
    context: dg.AssetExecutionContext, store: StoreResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    stored = embedding_store.latest_finetuner()
    version = int(stored["version"])
    finetuner = load_finetuner(stored["weights"])
    missing = embedding_store.texts_missing_finetuned_embedding(context.partition_key, version)
    hashes = missing["content_hash"].to_list()

    written = 0
    if hashes:
        X = embedding_store.base_embeddings(hashes, stored["model"])
        written = embedding_store.add_finetuned_embeddings(version, hashes, finetuner.transform(X).astype(np.float32))
    context.log.info(
        f"Text batch {context.partition_key!r}: {written} embeddings written for finetuner version {version}"
    )
    return dg.MaterializeResult(
        metadata={"finetuner_version": version, "computed": len(hashes), "rows_written": written}
    )
