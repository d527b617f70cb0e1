"""The nightly schedule: re-finetune on every current label, then refresh what depends on it.

The schedule launches the ``refinetune`` job (``trained_finetuner`` only). The new finetuner
version then triggers ``finetuned_embeddings`` for every text batch and ``evaluation_report``
through their automation conditions, evaluated by the ``embetter_automation`` sensor.

The cron expression and its time zone come from ``EMBETTER_NIGHTLY_CRON`` (default
``0 2 * * *``, 02:00) and ``EMBETTER_NIGHTLY_TIMEZONE`` (an IANA name, default ``UTC``), read
when the definitions load. The run key is the scheduled time, so Dagster launches one run
per scheduled time even when a tick is evaluated again.
"""

from __future__ import annotations

import os
import zoneinfo

import dagster as dg

from embetter_assets.defs.automation import default_schedule_status, refinetune

CRON_VARIABLE = "EMBETTER_NIGHTLY_CRON"
TIMEZONE_VARIABLE = "EMBETTER_NIGHTLY_TIMEZONE"
DEFAULT_CRON = "0 2 * * *"
DEFAULT_TIMEZONE = "UTC"


def _request_nightly_run(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
    scheduled = context.scheduled_execution_time
    context.log.info(f"Requesting the nightly finetune scheduled for {scheduled.isoformat()}")
    return dg.RunRequest(
        run_key=f"nightly-refinetune-{scheduled.isoformat()}",
        tags={"embetter/trigger": "nightly", "embetter/scheduled_for": scheduled.isoformat()},
    )


def build_nightly_schedule(cron: str | None = None, timezone: str | None = None) -> dg.ScheduleDefinition:
    """Build the nightly schedule. Unset arguments come from the environment, then the defaults.

    Raises ``ValueError`` naming the environment variable when the cron expression or the
    time zone is invalid.
    """
    cron = (cron or os.environ.get(CRON_VARIABLE) or DEFAULT_CRON).strip()
    timezone = (timezone or os.environ.get(TIMEZONE_VARIABLE) or DEFAULT_TIMEZONE).strip()
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
        raise ValueError(
            f"Invalid nightly schedule time zone {timezone!r} (from {TIMEZONE_VARIABLE}): not an IANA time "
            "zone name. Use a name such as 'Europe/Berlin' or 'UTC'."
        ) from error
    try:
        return dg.ScheduleDefinition(
            name="nightly_refinetune",
            job=refinetune,
            cron_schedule=cron,
            execution_timezone=timezone,
            execution_fn=_request_nightly_run,
            default_status=default_schedule_status(),
            description=(
                "Re-finetunes on every current label each night, reusing the newest finetuner version when "
                "labels and settings are unchanged; the automation sensor then refreshes the finetuned "
                "embeddings and the report."
            ),
        )
    except dg.DagsterInvalidDefinitionError as error:
        raise ValueError(
            f"Invalid nightly schedule cron expression {cron!r} (from {CRON_VARIABLE}). Use five fields "
            f"(minute, hour, day of month, month, day of week), such as {DEFAULT_CRON!r} for 02:00 every day."
        ) from error


nightly_refinetune = build_nightly_schedule()
