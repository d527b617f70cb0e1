"""The Dagster code location: ``dagster dev`` loads ``defs`` from this module."""

import dagster as dg

from embetter_assets.defs.assets.finetuner import finetuned_embeddings, trained_finetuner
from embetter_assets.defs.assets.labels import labelled_subset
from embetter_assets.defs.assets.report import evaluation_report
from embetter_assets.defs.assets.texts import base_embeddings, raw_texts
from embetter_assets.defs.resources import DataFoldersResource, EncoderResource, StoreResource

ALL_ASSETS = [raw_texts, base_embeddings, labelled_subset, trained_finetuner, finetuned_embeddings, evaluation_report]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    resources={
        "store": StoreResource(),
        "encoder": EncoderResource(),
        "folders": DataFoldersResource(),
    },
)
