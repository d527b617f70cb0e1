"""The Dagster code location: ``dagster dev`` loads ``defs`` from this module."""

import dagster as dg

from embetter_assets.defs.assets.finetuner import finetuned_embeddings, trained_finetuner
from embetter_assets.defs.assets.labels import labelled_subset
from embetter_assets.defs.assets.queue import labelling_queue
from embetter_assets.defs.assets.report import evaluation_report
from embetter_assets.defs.assets.texts import base_embeddings, raw_texts
from embetter_assets.defs.automation import automation_sensor, ingest_label_batches, ingest_text_batches, refinetune
from embetter_assets.defs.checks import ALL_CHECKS
from embetter_assets.defs.resources import DataFoldersResource, EncoderResource, StoreResource
from embetter_assets.defs.schedules import nightly_refinetune
from embetter_assets.defs.sensors import label_batch_sensor, text_batch_sensor

ALL_ASSETS = [
    raw_texts,
    base_embeddings,
    labelled_subset,
    trained_finetuner,
    finetuned_embeddings,
    evaluation_report,
    labelling_queue,
]

defs = dg.Definitions(
    assets=ALL_ASSETS,
    asset_checks=ALL_CHECKS,
    jobs=[ingest_text_batches, ingest_label_batches, refinetune],
    sensors=[text_batch_sensor, label_batch_sensor, automation_sensor],
    schedules=[nightly_refinetune],
    resources={
        "store": StoreResource(),
        "encoder": EncoderResource(),
        "folders": DataFoldersResource(),
    },
)
