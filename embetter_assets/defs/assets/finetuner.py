"""The trained finetuner and the finetuned embeddings it produces."""

import hashlib
import importlib.metadata
import json
import time
from typing import Literal

import dagster as dg
import numpy as np
import polars as pl
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
        "`finetuners` table with its weights. When the training labels, settings and model are "
        "those of the newest stored version, that version is reused and nothing is trained."
    ),
)
def trained_finetuner(
    context: dg.AssetExecutionContext, config: FinetunerConfig, store: StoreResource, encoder: EncoderResource
) -> dg.MaterializeResult:
    embedding_store = store.get_store()
    withdrawn = prune_withdrawn_label_batches(context, embedding_store)
    current_labels = embedding_store.current_labels()
    label_sets = split_labels(current_labels)
    train = label_sets.train
    if label_sets.single_text_classes:
        context.log.warning(
            f"Left out of training, because each has a single training text: classes "
            f"{', '.join(repr(label) for label in label_sets.single_text_classes)}. Label at least one more "
            "text of each to train on them."
        )
    if train["label"].n_unique() < 2:
        raise ValueError(
            f"trained_finetuner needs training labels of at least two classes; found {train.height} texts "
            f"with classes {sorted(train['label'].unique().to_list())}. Add a label batch."
        )

    finetuner = config.build()
    params = finetuner.get_params()
    label_batches = sorted(current_labels["batch"].unique().to_list())
    fingerprint = training_fingerprint(train, config.kind, params, encoder.model)
    metadata = {
        "kind": config.kind,
        "params": dg.MetadataValue.json(params),
        "label_batches": dg.MetadataValue.json(label_batches),
        "withdrawn_label_rows_deleted": sum(withdrawn.values()),
        "train_labels_per_class": dg.MetadataValue.json(class_counts(train)),
        "fingerprint": fingerprint,
        **label_sets.counts,
    }

    latest = embedding_store.latest_finetuner(missing_ok=True)
    if latest is not None and latest.get("fingerprint") == fingerprint:
        context.log.info(
            f"Training labels, settings and model are unchanged since finetuner version {latest['version']}, "
            "so that version is reused instead of training and storing an identical copy. Change the labels "
            "or the run configuration (random_state, for one) to train a new version."
        )
        return dg.MaterializeResult(
            metadata={**metadata, "version": int(latest["version"]), "output_dim": int(latest["output_dim"]), "reused": True}
        )

    X_train = embedding_store.base_embeddings(train["content_hash"].to_list(), encoder.model)
    context.log.info(
        f"Training a {config.kind} finetuner on {train.height} texts, {train['label'].n_unique()} classes, "
        f"{X_train.shape[1]} input dimensions"
    )
    started = time.perf_counter()
    finetuner.fit(X_train, train["label"].to_numpy())
    seconds = time.perf_counter() - started

    version = embedding_store.add_finetuner(
        kind=config.kind,
        params=params,
        model=encoder.model,
        input_dim=int(X_train.shape[1]),
        output_dim=int(finetuner.n_features_out_),
        classes=list(finetuner.classes_),
        n_train=train.height,
        label_batches=label_batches,
        weights=finetuner.to_bytes(),
        fingerprint=fingerprint,
    )
    context.log.info(f"Stored finetuner version {version} after {seconds:.1f} s of training")
    return dg.MaterializeResult(
        metadata={
            **metadata,
            "version": version,
            "output_dim": int(finetuner.n_features_out_),
            "fit_seconds": round(seconds, 2),
            "reused": False,
        }
    )


def training_fingerprint(train: pl.DataFrame, kind: str, params: dict, model: str) -> str:
    """Return a SHA-256 digest of everything a training run depends on.

    That is the training texts and labels in training order, the finetuner kind and its
    parameters (the seed among them), the base model, and this package's version. Two runs
    with the same digest train the same finetuner, so the second can reuse the first.
    """
    inputs = {
        "package": _package_version(),
        "kind": kind,
        "params": params,
        "model": model,
        "train": [[content_hash, str(label)] for content_hash, label in train.select("content_hash", "label").iter_rows()],
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode("utf-8")).hexdigest()


def _package_version() -> str:
    try:
        return importlib.metadata.version("embetter-assets")
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


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
