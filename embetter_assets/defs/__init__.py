"""Dagster definitions of the pipeline: assets, resources, checks, jobs and automation.

Everything Dagster-specific lives in this package; the library modules beside it
(encoder, finetuners, store, ingest, evaluation) import no Dagster.
"""
