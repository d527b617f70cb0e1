"""Folder sensors: a file dropped into ``data/texts/`` or ``data/labels/`` becomes a partition and a run.

Each sensor lists its folder on every tick and keeps, in its cursor (JSON), a fingerprint of
every file it requested a run for: size, modification time in nanoseconds, SHA-256 of the
content and a revision counter. A file is requested once per content: a new file, or a file
whose SHA-256 changed under the same name, gets a run request whose run key is
``<partition key>@<revision>:<sha256 prefix>``. The cursor goes back to Dagster in the same
``SensorResult`` as the run requests, and Dagster stores it together with the reserved runs.
A tick that fails before that point leaves the cursor as it was. The next tick then computes
the same run keys again, and Dagster does not launch a run key twice.

Files are skipped, with the reason in the tick's log, when they are hidden (name starting
with ``.``), not regular files, of an unsupported type, named so that no partition key fits,
modified less than :data:`MIN_FILE_AGE_SECONDS` ago (possibly still being written), or
unchanged since their last request. A file that disappears keeps its partition and stored
rows; deleting the partition withdraws the batch (see ``prune_withdrawn_label_batches``).
A partition deleted while its file stays unchanged stays deleted.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import dagster as dg

from embetter_assets.defs.automation import (
    default_status,
    ingest_label_batches,
    ingest_text_batches,
)
from embetter_assets.defs.partitions import label_batches, text_batches
from embetter_assets.defs.resources import DataFoldersResource
from embetter_assets.ingest import SUPPORTED_SUFFIXES
from embetter_assets.partition_keys import (
    PartitionKeyError,
    file_name_for_key,
    key_for_file_name,
)

# A file modified more recently than this may still be being copied in, so the next tick
# looks again. Writing the file elsewhere and moving it into the folder avoids partial reads.
MIN_FILE_AGE_SECONDS = 5.0

# How long a label file waits for a text file that has no partition yet. Much longer than
# the text sensor's interval, so only a text partition deleted on purpose outlasts it.
# NOTE: while the text sensor is stopped for longer than this, label files load before their
# texts. Their runs then fail with unknown text ids and have to be re-run by hand.
TEXT_REGISTRATION_GRACE_SECONDS = 600.0

# Skipped files named one by one in a tick's log; the rest are counted.
MAX_LOGGED_SKIPS = 20

CURSOR_FORMAT = 1
_HASH_BLOCK_BYTES = 1 << 20


@dataclass
class FileFingerprint:
    """The state of one batch file when its sensor last requested a run for it."""

    size: int
    mtime_ns: int
    sha256: str
    revision: int
    present: bool = True


@dataclass
class FolderScan:
    """The outcome of one tick over one folder."""

    run_requests: list[dg.RunRequest]
    new_partition_keys: list[str]
    cursor: dict[str, FileFingerprint]
    skipped: list[tuple[str, str]]
    unchanged: int


def load_cursor(cursor: str | None) -> dict[str, FileFingerprint]:
    """Parse a sensor cursor into fingerprints by partition key. An empty cursor gives none."""
    if not cursor:
        return {}
    data = json.loads(cursor)
    if data.get("format") != CURSOR_FORMAT:
        raise ValueError(
            f"Sensor cursor has format {data.get('format')!r}, expected {CURSOR_FORMAT}. Reset the sensor's "
            "cursor in the Dagster UI; every file is then requested once more, which is safe because runs "
            "replace their partition."
        )
    return {key: FileFingerprint(**entry) for key, entry in data["files"].items()}


def dump_cursor(fingerprints: dict[str, FileFingerprint]) -> str:
    """Serialise fingerprints by partition key into a sensor cursor."""
    files = {key: asdict(fingerprint) for key, fingerprint in sorted(fingerprints.items())}
    return json.dumps({"format": CURSOR_FORMAT, "files": files}, separators=(",", ":"))


def file_sha256(path: Path) -> str:
    """Return the SHA-256 hex digest of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(_HASH_BLOCK_BYTES):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class BatchFile:
    """A file in a batch folder that could be loaded now."""

    path: Path
    key: str
    size: int
    mtime_ns: int


def list_batch_files(
    folder: Path, *, now: float | None = None, min_age_seconds: float = MIN_FILE_AGE_SECONDS
) -> tuple[list[BatchFile], list[tuple[str, str]]]:
    """List the files of ``folder`` that can be loaded now, and the others with the reason why not.

    A file modified less than ``min_age_seconds`` ago may still be being written, so it waits.
    """
    now = time.time() if now is None else now
    files: list[BatchFile] = []
    skipped: list[tuple[str, str]] = []
    for path in sorted(folder.iterdir()) if folder.is_dir() else []:
        name = path.name
        if name.startswith("."):
            skipped.append((name, "hidden file"))
            continue
        if not path.is_file():
            skipped.append((name, "not a regular file"))
            continue
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            skipped.append((name, f"unsupported file type; use one of {', '.join(SUPPORTED_SUFFIXES)}"))
            continue
        try:
            key = key_for_file_name(name)
        except PartitionKeyError as error:
            skipped.append((name, f"no partition key: {error}"))
            continue
        try:
            stat = path.stat()
        except OSError as error:
            skipped.append((name, f"cannot be read ({error.strerror}); retrying on the next tick"))
            continue
        age = now - stat.st_mtime
        if age < min_age_seconds:
            skipped.append((name, f"{_STILL_WRITTEN} {max(age, 0):.1f} s ago; waiting until it is {min_age_seconds:.0f} s old"))
            continue
        files.append(BatchFile(path, key, stat.st_size, stat.st_mtime_ns))
    return files, skipped


_STILL_WRITTEN = "modified"


def scan_folder(
    folder: Path,
    previous: dict[str, FileFingerprint],
    existing_partitions: set[str],
    *,
    now: float | None = None,
) -> FolderScan:
    """Compare a folder with the fingerprints of the last tick and decide what to request.

    Reads the folder but changes nothing, so the sensors and their tests share it. Files whose
    size and modification time match the cursor are not read again.
    """
    files, skipped = list_batch_files(folder, now=now)
    cursor = {key: FileFingerprint(**asdict(fingerprint)) for key, fingerprint in previous.items()}
    requests: list[dg.RunRequest] = []
    new_keys: list[str] = []
    unchanged = 0

    for file in files:
        known = cursor.get(file.key)
        if known and known.present and (known.size, known.mtime_ns) == (file.size, file.mtime_ns):
            unchanged += 1
            if file.key not in existing_partitions:
                skipped.append((file.path.name, "partition deleted while the file is unchanged; it stays withdrawn"))
            continue
        try:
            sha256 = file_sha256(file.path)
        except OSError as error:
            skipped.append((file.path.name, f"cannot be read ({error.strerror}); retrying on the next tick"))
            continue
        if known and known.present and known.sha256 == sha256:
            known.size, known.mtime_ns = file.size, file.mtime_ns
            unchanged += 1
            continue

        revision = known.revision + 1 if known else 1
        cursor[file.key] = FileFingerprint(file.size, file.mtime_ns, sha256, revision)
        if file.key not in existing_partitions:
            new_keys.append(file.key)
        requests.append(
            dg.RunRequest(
                partition_key=file.key,
                run_key=f"{file.key}@{revision}:{sha256[:16]}",
                tags={"embetter/source_file": str(file.path), "embetter/sha256": sha256},
            )
        )

    # Files skipped on this tick (still being written, unreadable) are not gone.
    listed = {file.key for file in files} | {_key_or_none(name) for name, _ in skipped}
    for key, fingerprint in cursor.items():
        if fingerprint.present and key not in listed:
            fingerprint.present = False
            skipped.append((file_name_for_key(key), "file removed; its partition and stored rows stay until the partition is deleted"))
    return FolderScan(requests, new_keys, cursor, skipped, unchanged)


def _key_or_none(name: str) -> str | None:
    try:
        return key_for_file_name(name)
    except PartitionKeyError:
        return None


def _describe_skips(scan: FolderScan) -> str:
    named = [f"{name} ({reason})" for name, reason in scan.skipped[:MAX_LOGGED_SKIPS]]
    more = len(scan.skipped) - len(named)
    parts = [f"{scan.unchanged} unchanged"] if scan.unchanged else []
    parts += named
    if more:
        parts.append(f"{more} more")
    return "; ".join(parts) if parts else "nothing"


def _evaluate(
    context: dg.SensorEvaluationContext,
    folder: Path,
    partitions: dg.DynamicPartitionsDefinition,
    batch_kind: str,
) -> dg.SensorResult:
    previous = load_cursor(context.cursor)
    existing = set(context.instance.get_dynamic_partitions(partitions.name))
    scan = scan_folder(folder, previous, existing)

    context.log.info(
        f"{folder}: {len(scan.run_requests)} {batch_kind} files to load "
        f"({len(scan.new_partition_keys)} new partitions); skipped {_describe_skips(scan)}"
    )
    for request in scan.run_requests:
        context.log.info(f"Requesting {batch_kind} batch {request.partition_key!r} (run key {request.run_key})")

    cursor = dump_cursor(scan.cursor)
    if not scan.run_requests:
        return dg.SensorResult(skip_reason=f"No new or changed {batch_kind} files in {folder}.", cursor=cursor)
    return dg.SensorResult(
        run_requests=scan.run_requests,
        dynamic_partitions_requests=[partitions.build_add_request(scan.new_partition_keys)]
        if scan.new_partition_keys
        else [],
        cursor=cursor,
    )


def pending_text_batches(context: dg.SensorEvaluationContext, folders: DataFoldersResource) -> list[str]:
    """Return the reasons why label batches must wait, empty when they need not.

    Label batches wait for text files that are not partitions yet and for text loads in flight,
    because a label batch naming texts that are still on their way fails with unknown text ids.
    Text files that can never load (unsupported, no partition key) do not hold labels back.
    Neither does a text file without a partition that was modified more than
    :data:`TEXT_REGISTRATION_GRACE_SECONDS` ago, because its partition was most likely deleted
    on purpose.
    """
    reasons = []
    now = time.time()
    existing = set(context.instance.get_dynamic_partitions(text_batches.name))
    files, skipped = list_batch_files(folders.texts_dir, now=now)
    unregistered = [
        file.path.name
        for file in files
        if file.key not in existing and now - file.mtime_ns / 1e9 < TEXT_REGISTRATION_GRACE_SECONDS
    ]
    if unregistered:
        reasons.append(f"text files not yet registered as partitions: {', '.join(unregistered[:5])}")
    being_written = [name for name, reason in skipped if reason.startswith(_STILL_WRITTEN)]
    if being_written:
        reasons.append(f"text files still being written: {', '.join(being_written[:5])}")
    in_flight = context.instance.get_runs_count(
        dg.RunsFilter(job_name=ingest_text_batches.name, statuses=list(_IN_FLIGHT_STATUSES))
    )
    if in_flight:
        reasons.append(f"{in_flight} {ingest_text_batches.name} runs queued or in progress")
    return reasons


_IN_FLIGHT_STATUSES = (
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
)


@dg.sensor(
    job=ingest_text_batches,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description=(
        "Turns each new or changed CSV, Parquet or JSON Lines file in data/texts/ into a text_batches "
        "partition and a run of raw_texts and base_embeddings."
    ),
)
def text_batch_sensor(context: dg.SensorEvaluationContext, folders: DataFoldersResource) -> dg.SensorResult:
    return _evaluate(context, folders.texts_dir, text_batches, batch_kind="text")


@dg.sensor(
    job=ingest_label_batches,
    minimum_interval_seconds=30,
    default_status=default_status(),
    description=(
        "Turns each new or changed CSV, Parquet or JSON Lines file in data/labels/ into a label_batches "
        "partition and a run of labelled_subset, once no text batch is still loading."
    ),
)
def label_batch_sensor(context: dg.SensorEvaluationContext, folders: DataFoldersResource) -> dg.SensorResult:
    waiting_for = pending_text_batches(context, folders)
    if waiting_for:
        context.log.info(f"Label files wait for text batches: {'; '.join(waiting_for)}")
        return dg.SensorResult(skip_reason=f"Waiting for text batches: {'; '.join(waiting_for)}.", cursor=context.cursor)
    return _evaluate(context, folders.labels_dir, label_batches, batch_kind="label")
