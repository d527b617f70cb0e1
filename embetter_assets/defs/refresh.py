"""Materialize the whole asset graph, stage by stage, on a Dagster instance.

The graph mixes two dynamic partitionings and unpartitioned assets, which Dagster cannot run
as one partitioned run, so each stage is its own run. The stages are text batches, label
batches, the finetuner, finetuned embeddings per text batch, the report and the labelling queue.
"""

from __future__ import annotations

import os
from pathlib import Path

import dagster as dg

from embetter_assets.defs.partitions import label_batches, text_batches
from embetter_assets.defs.resources import DataFoldersResource, EncoderResource, StoreResource
from embetter_assets.store import PATH_VARIABLE

_INSTANCE_SETTINGS = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"


def persistent_instance(data_dir: Path) -> dg.DagsterInstance:
    """Return the Dagster instance in ``DAGSTER_HOME``, or in ``<data_dir>/dagster_home``.

    The folder and a ``dagster.yaml`` that turns telemetry off are created when missing, so
    the runs made here show up in ``dagster dev`` started on the same home.
    """
    home = Path(os.environ.get("DAGSTER_HOME") or Path(data_dir) / "dagster_home").resolve()
    home.mkdir(parents=True, exist_ok=True)
    settings = home / "dagster.yaml"
    if not settings.exists():
        settings.write_text(_INSTANCE_SETTINGS)
    os.environ["DAGSTER_HOME"] = str(home)
    return dg.DagsterInstance.get()


def default_resources(data_dir: Path) -> dict:
    """Return the resources for a data folder; ``EMBETTER_DUCKDB_PATH`` still wins for the store."""
    store_path = os.environ.get(PATH_VARIABLE) or str(Path(data_dir) / "embetter.duckdb")
    return {
        "store": StoreResource(path=store_path),
        "encoder": EncoderResource(),
        "folders": DataFoldersResource(root=str(data_dir)),
    }


def materialize_everything(
    instance: dg.DagsterInstance,
    *,
    text_keys: list[str],
    label_keys: list[str],
    data_dir: Path,
    resources: dict | None = None,
    run_config: dict | None = None,
    log_level: str | None = None,
) -> list[dg.ExecuteInProcessResult]:
    """Register the batch partitions and materialize every asset for them, in dependency order.

    ``run_config`` maps asset names to their config, as in ``{"ops": {"trained_finetuner":
    {"config": {...}}}}``; each run gets the entries of the assets it materializes.
    ``log_level`` (such as ``"INFO"``) sets the lowest level of Dagster's console log, which
    otherwise prints every DEBUG event. Raises on the first failed run, so later stages never
    run on partial input.
    """
    from embetter_assets.definitions import ALL_ASSETS, ALL_CHECKS

    resources = resources or default_resources(data_dir)
    for partitions, keys in ((text_batches, text_keys), (label_batches, label_keys)):
        new_keys = [key for key in keys if not instance.has_dynamic_partition(partitions.name, key)]
        if new_keys:
            instance.add_dynamic_partitions(partitions.name, new_keys)

    loggers = {"loggers": {"console": {"config": {"log_level": log_level}}}} if log_level else {}

    def run(selection: list[str], partition_key: str | None = None, config: dict | None = None):
        if loggers:
            config = {**(config or {}), **loggers}
        return dg.materialize(
            [*ALL_ASSETS, *ALL_CHECKS],
            selection=selection,
            partition_key=partition_key,
            instance=instance,
            resources=resources,
            run_config=config,
        )

    results = [run(["raw_texts", "base_embeddings"], key) for key in text_keys]
    results += [run(["labelled_subset"], key) for key in label_keys]
    results.append(run(["trained_finetuner"], config=_op_config(run_config, "trained_finetuner")))
    results += [run(["finetuned_embeddings"], key) for key in text_keys]
    results.append(run(["evaluation_report"]))
    results.append(run(["labelling_queue"], config=_op_config(run_config, "labelling_queue")))
    return results


def _op_config(run_config: dict | None, asset_name: str) -> dict | None:
    """Return the part of ``run_config`` for one asset: Dagster rejects config for ops outside the run."""
    ops = (run_config or {}).get("ops", {})
    return {"ops": {asset_name: ops[asset_name]}} if asset_name in ops else None
