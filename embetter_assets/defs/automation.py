"""Automation that needs no clicking: the ingest jobs, the automation conditions and their sensor.

New files reach ``raw_texts``, ``base_embeddings`` and ``labelled_subset`` through the folder
sensors (``sensors.py``), which launch the two ingest jobs defined here. Everything after
them is declarative automation, evaluated by :data:`automation_sensor`:

- ``trained_finetuner`` retrains once a label batch was (re)loaded, after every running
  ingest step has finished;
- ``finetuned_embeddings`` fills in each text batch once it has base embeddings and a
  finetuner exists, and every batch again after a new finetuner version;
- ``evaluation_report`` (and any asset given :func:`after_new_finetuner`) runs after a new
  finetuner version, once the finetuned embeddings it triggers are done.

Set ``EMBETTER_AUTOMATION=stopped`` before the definitions load to make the sensors and the
nightly schedule start stopped, for example in a test that drives runs itself.
"""

from __future__ import annotations

import os

import dagster as dg

from embetter_assets.defs.partitions import label_batches
from embetter_assets.store import EmbeddingStore

AUTOMATION_VARIABLE = "EMBETTER_AUTOMATION"

TEXT_INGEST_ASSETS = ("raw_texts", "base_embeddings")
LABEL_INGEST_ASSETS = ("labelled_subset",)


def default_status() -> dg.DefaultSensorStatus:
    """Return the status sensors start in: running, unless ``EMBETTER_AUTOMATION=stopped``."""
    value = os.environ.get(AUTOMATION_VARIABLE, "running").strip().lower()
    if value not in {"running", "stopped"}:
        raise ValueError(f"{AUTOMATION_VARIABLE} must be 'running' or 'stopped', got {value!r}.")
    return dg.DefaultSensorStatus.RUNNING if value == "running" else dg.DefaultSensorStatus.STOPPED


def default_schedule_status() -> dg.DefaultScheduleStatus:
    """Return the status the nightly schedule starts in, following ``EMBETTER_AUTOMATION``."""
    running = default_status() == dg.DefaultSensorStatus.RUNNING
    return dg.DefaultScheduleStatus.RUNNING if running else dg.DefaultScheduleStatus.STOPPED


# ----------------------------------------------------------------- automation conditions


def after_new_labels() -> dg.AutomationCondition:
    """Return the condition of ``trained_finetuner``: a label batch was loaded since it last ran.

    It waits while any upstream partition (a label batch or a text batch being encoded) is in
    progress, because labels may name texts whose embeddings are still being written.
    Missing text batches do not block it: one bad text file must not stop training.
    """
    labels_loaded = dg.AutomationCondition.any_deps_updated().allow(dg.AssetSelection.assets(*LABEL_INGEST_ASSETS))
    return (
        labels_loaded.since_last_handled()
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after_new_labels")


def per_batch_eager() -> dg.AutomationCondition:
    """Return the condition of ``finetuned_embeddings``: Dagster's eager condition, per text batch."""
    return dg.AutomationCondition.eager()


def after_new_finetuner() -> dg.AutomationCondition:
    """Return the condition for assets read from the newest finetuner, such as ``evaluation_report``.

    True once ``trained_finetuner`` has a new materialization that this asset's own run did
    not produce, except on the tick that first evaluates the new version and while a
    dependency is in progress. The finetuned embeddings that the new version triggers are
    requested on that first tick and count as in progress until they finish, so the asset
    runs after them.
    Dagster's ``will_be_requested`` cannot express this, because a partitioned dependency
    never runs in the same run as this unpartitioned asset.
    """
    finetuner = dg.AssetSelection.assets("trained_finetuner")
    updated = dg.AutomationCondition.newly_updated()
    # Unlike any_deps_updated, this ignores a finetuner merely requested on this tick, which
    # would put this asset into the finetuner's run, ahead of the finetuned embeddings.
    updated_elsewhere = updated & ~dg.AutomationCondition.executed_with_root_target()
    return (
        dg.AutomationCondition.any_deps_match(updated_elsewhere).allow(finetuner).since_last_handled()
        & ~dg.AutomationCondition.any_deps_match(updated).allow(finetuner)
        & ~dg.AutomationCondition.any_deps_in_progress()
        & ~dg.AutomationCondition.in_progress()
    ).with_label("after_new_finetuner")


automation_sensor = dg.AutomationConditionSensorDefinition(
    "embetter_automation",
    target=dg.AssetSelection.all(),
    default_status=default_status(),
    minimum_interval_seconds=30,
    description=(
        "Evaluates the automation conditions: retrains the finetuner after new labels and brings "
        "finetuned embeddings and the report up to date after a new finetuner version."
    ),
)


# ----------------------------------------------------------------- jobs launched by the sensors and the schedule

ingest_text_batches = dg.define_asset_job(
    "ingest_text_batches",
    selection=dg.AssetSelection.assets(*TEXT_INGEST_ASSETS),
    description="Load one text batch file and encode its texts that have no base embedding yet.",
)

ingest_label_batches = dg.define_asset_job(
    "ingest_label_batches",
    selection=dg.AssetSelection.assets(*LABEL_INGEST_ASSETS),
    description="Load one label batch file.",
)

refinetune = dg.define_asset_job(
    "refinetune",
    selection=dg.AssetSelection.assets("trained_finetuner"),
    description=(
        "Train a new finetuner version on every current label; the automation sensor then refreshes "
        "the finetuned embeddings and the report."
    ),
)


# ----------------------------------------------------------------- withdrawn label batches


def prune_withdrawn_label_batches(context: dg.AssetExecutionContext, store: EmbeddingStore) -> dict[str, int]:
    """Delete the stored labels of label batches whose partition was deleted; return rows per batch.

    Deleting a dynamic partition leaves its rows in DuckDB, so without this step a withdrawn
    batch would keep training finetuners. Only batches that this Dagster instance
    materialized and no longer lists are deleted, in one transaction. A batch this instance
    never materialized (a store shared with another Dagster home) is kept, with a warning.
    """
    if not store.table_exists("labels"):
        return {}
    stored = set(store.query("SELECT DISTINCT batch FROM labels")["batch"].to_list())
    orphaned = stored - set(context.instance.get_dynamic_partitions(label_batches.name))
    if not orphaned:
        return {}

    materialized_here = context.instance.get_materialized_partitions(dg.AssetKey("labelled_subset"))
    withdrawn = sorted(orphaned & materialized_here)
    foreign = sorted(orphaned - materialized_here)
    if foreign:
        context.log.warning(
            f"Keeping the labels of {len(foreign)} label batches that are not partitions of this Dagster "
            f"instance and were never materialized by it: {', '.join(foreign[:10])}. If they are withdrawn, "
            "run the finetuner from the Dagster home that loaded them, or delete their rows from `labels`."
        )
    deleted = store.delete_label_batches(withdrawn)
    for batch, rows in deleted.items():
        context.log.info(f"Label batch {batch!r} is no longer a partition: deleted its {rows} labels from the store")
    return deleted


def load_job(name: str) -> dg.JobDefinition:
    """Return job ``name`` of the code location with its resources bound.

    For running a job out of process without a code server:
    ``dg.execute_job(dg.build_reconstructable_job("embetter_assets.defs.automation", "load_job",
    reconstructable_args=("ingest_text_batches",)), instance=...)``.
    """
    from embetter_assets.definitions import defs

    return defs.resolve_job_def(name)
