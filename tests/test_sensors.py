"""Partition keys, the folder sensors, the nightly schedule and the automation conditions.

The sensors are evaluated through Dagster's own ``build_sensor_context`` on real folders and
a real test instance. The automation conditions are evaluated through
``evaluate_automation_conditions`` on materializations reported to such an instance.
"""

import datetime
import json
import os
import unicodedata
from pathlib import Path

import dagster as dg
import pytest

from embetter_assets.defs import sensors
from embetter_assets.defs.partitions import label_batches, text_batches
from embetter_assets.defs.resources import DataFoldersResource
from embetter_assets.defs.schedules import build_nightly_schedule
from embetter_assets.ingest import InvalidBatchError
from embetter_assets.partition_keys import (
    MAX_KEY_LENGTH,
    PartitionKeyError,
    file_name_for_key,
    key_for_file_name,
)

TRICKY_NAMES = [
    "news.csv",
    "news.CSV",
    "news csv.csv",
    "news,csv.csv",
    "news%2Ccsv.csv",
    "news%252C.csv",
    "a...b.csv",
    "a..b.csv",
    "a.%2E.b.csv",
    "..csv",
    ".hidden.csv",
    "[2024...2025].csv",
    "tab\there.csv",
    "quote'\";--.csv",
    unicodedata.normalize("NFC", "café.csv"),
    unicodedata.normalize("NFD", "café.csv"),
    "日本語のツイート.jsonl",
    "emoji 🎉.parquet",
    "x" * 251 + ".csv",
]


def _touch_old(path: Path, seconds_ago: float = 60.0) -> Path:
    past = path.stat().st_mtime - seconds_ago
    os.utime(path, (past, past))
    return path


def _write(folder: Path, name: str, content: str, *, age: float = 60.0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(content, encoding="utf-8")
    return _touch_old(path, age)


# ----------------------------------------------------------------- partition keys


@pytest.mark.parametrize("name", TRICKY_NAMES)
def test_partition_key_round_trips(name):
    key = key_for_file_name(name)

    assert file_name_for_key(key) == name
    assert "..." not in key
    assert not key.startswith(".")
    assert set(key) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_-.%")


def test_partition_keys_never_collide():
    keys = [key_for_file_name(name) for name in TRICKY_NAMES]

    assert len(set(keys)) == len(TRICKY_NAMES)


def test_partition_key_keeps_safe_names():
    assert key_for_file_name("news_2024-01.v2.csv") == "news_2024-01.v2.csv"


@pytest.mark.parametrize(
    "key",
    ["a%2fb.csv", "a%41.csv", "a%2.csv", "a b.csv", "..%2F..%2Fetc%2Fpasswd.csv", "a%FF.csv", "a...csv", ""],
)
def test_partition_key_rejects_non_canonical_keys(key):
    with pytest.raises(PartitionKeyError):
        file_name_for_key(key)


def test_partition_key_rejects_overlong_name():
    name = "ü" * 60 + ".csv"

    with pytest.raises(PartitionKeyError, match=f"more than the {MAX_KEY_LENGTH} allowed") as error:
        key_for_file_name(name)
    assert name in str(error.value)


def test_folders_resolve_encoded_key_to_file(tmp_path):
    path = _write(tmp_path / "texts", "Q1 tweets, café.csv", "text\nhello\n")
    folders = DataFoldersResource(root=str(tmp_path))

    assert folders.text_file(key_for_file_name(path.name)) == path
    with pytest.raises(InvalidBatchError, match="does not name a batch file"):
        folders.text_file("Q1%20tweets%2c%20caf%C3%A9.csv")


# ----------------------------------------------------------------- folder scans


def test_scan_requests_new_file_once(tmp_path):
    _write(tmp_path, "a.csv", "text\none\n")

    first = sensors.scan_folder(tmp_path, {}, set())
    second = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})

    assert [request.partition_key for request in first.run_requests] == ["a.csv"]
    assert first.new_partition_keys == ["a.csv"]
    assert first.run_requests[0].run_key.startswith("a.csv@1:")
    assert second.run_requests == []
    assert second.unchanged == 1


def test_scan_ignores_touch_without_content_change(tmp_path):
    path = _write(tmp_path, "a.csv", "text\none\n")
    first = sensors.scan_folder(tmp_path, {}, set())
    _touch_old(path, 30)

    second = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})

    assert second.run_requests == []
    assert second.cursor["a.csv"].mtime_ns == path.stat().st_mtime_ns
    assert second.cursor["a.csv"].revision == 1


def test_scan_rebuilds_changed_content(tmp_path):
    _write(tmp_path, "a.csv", "text\none\n")
    first = sensors.scan_folder(tmp_path, {}, set())
    _write(tmp_path, "a.csv", "text\none\ntwo\n", age=30)

    second = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})

    assert [request.partition_key for request in second.run_requests] == ["a.csv"]
    assert second.run_requests[0].run_key.startswith("a.csv@2:")
    assert second.run_requests[0].run_key != first.run_requests[0].run_key
    assert second.new_partition_keys == []


def test_scan_skips_with_reasons(tmp_path):
    _write(tmp_path, ".a.csv.partial", "text\none\n")
    _write(tmp_path, "notes.txt", "hello")
    _write(tmp_path, "fresh.csv", "text\none\n", age=0)
    _write(tmp_path, "ü" * 60 + ".csv", "text\none\n")
    (tmp_path / "folder.csv").mkdir()

    scan = sensors.scan_folder(tmp_path, {}, set())
    reasons = dict(scan.skipped)

    assert scan.run_requests == []
    assert reasons[".a.csv.partial"] == "hidden file"
    assert reasons["notes.txt"].startswith("unsupported file type")
    assert reasons["fresh.csv"].startswith("modified")
    assert "more than the 255 allowed" in reasons["ü" * 60 + ".csv"]
    assert reasons["folder.csv"] == "not a regular file"


def test_scan_keeps_files_still_being_written(tmp_path):
    _write(tmp_path, "a.csv", "text\none\n")
    first = sensors.scan_folder(tmp_path, {}, set())
    _write(tmp_path, "a.csv", "text\none\ntwo\n", age=0)

    second = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})

    assert second.run_requests == []
    assert second.cursor["a.csv"].present
    assert second.cursor["a.csv"].revision == 1


def test_scan_reloads_file_removed_and_added_back(tmp_path):
    path = _write(tmp_path, "a.csv", "text\none\n")
    first = sensors.scan_folder(tmp_path, {}, set())
    path.unlink()
    removed = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})
    _write(tmp_path, "a.csv", "text\none\n")

    added_back = sensors.scan_folder(tmp_path, removed.cursor, set())

    assert removed.run_requests == []
    assert dict(removed.skipped)["a.csv"].startswith("file removed")
    assert not removed.cursor["a.csv"].present
    assert [request.run_key[:8] for request in added_back.run_requests] == ["a.csv@2:"]
    assert added_back.new_partition_keys == ["a.csv"]


def test_scan_leaves_unreadable_file_out_of_cursor(tmp_path, monkeypatch):
    _write(tmp_path, "a.csv", "text\none\n")
    _write(tmp_path, "b.csv", "text\ntwo\n")
    real_sha256 = sensors.file_sha256

    def failing_sha256(path):
        if path.name == "b.csv":
            raise PermissionError(13, "Permission denied")
        return real_sha256(path)

    monkeypatch.setattr(sensors, "file_sha256", failing_sha256)
    first = sensors.scan_folder(tmp_path, {}, set())
    monkeypatch.setattr(sensors, "file_sha256", real_sha256)
    second = sensors.scan_folder(tmp_path, first.cursor, {"a.csv"})

    assert [request.partition_key for request in first.run_requests] == ["a.csv"]
    assert set(first.cursor) == {"a.csv"}
    assert "Permission denied" in dict(first.skipped)["b.csv"]
    assert [request.partition_key for request in second.run_requests] == ["b.csv"]


# ----------------------------------------------------------------- sensors through Dagster


@pytest.fixture
def instance():
    with dg.instance_for_test() as test_instance:
        yield test_instance


def _tick(sensor, instance, root: Path, cursor: str | None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, resources={"folders": DataFoldersResource(root=str(root))}
    )
    return sensor(context)


def _apply_partition_requests(instance, result: dg.SensorResult) -> None:
    for request in result.dynamic_partitions_requests or []:
        instance.add_dynamic_partitions(request.partitions_def_name, list(request.partition_keys))


def test_text_sensor_adds_partitions_and_cursor(instance, tmp_path):
    _write(tmp_path / "texts", "b batch.csv", "text\ntwo\n")
    _write(tmp_path / "texts", "a.jsonl", '{"text": "one"}\n')
    _write(tmp_path / "texts", "readme.md", "not a batch")

    result = _tick(sensors.text_batch_sensor, instance, tmp_path, None)
    _apply_partition_requests(instance, result)
    again = _tick(sensors.text_batch_sensor, instance, tmp_path, result.cursor)

    assert [request.partition_key for request in result.run_requests] == ["a.jsonl", "b%20batch.csv"]
    assert instance.get_dynamic_partitions(text_batches.name) == ["a.jsonl", "b%20batch.csv"]
    assert set(json.loads(result.cursor)["files"]) == {"a.jsonl", "b%20batch.csv"}
    assert again.run_requests == []
    assert again.skip_reason is not None
    assert again.cursor == result.cursor


def test_failed_tick_repeats_run_keys(instance, tmp_path):
    _write(tmp_path / "texts", "a.csv", "text\none\n")
    first = _tick(sensors.text_batch_sensor, instance, tmp_path, None)

    # The tick's result never reached Dagster, so the stored cursor is still the empty one.
    repeated = _tick(sensors.text_batch_sensor, instance, tmp_path, None)

    assert [request.run_key for request in repeated.run_requests] == [request.run_key for request in first.run_requests]


def test_text_sensor_keeps_deleted_partition_withdrawn(instance, tmp_path):
    _write(tmp_path / "texts", "a.csv", "text\none\n")
    first = _tick(sensors.text_batch_sensor, instance, tmp_path, None)
    _apply_partition_requests(instance, first)
    instance.delete_dynamic_partition(text_batches.name, "a.csv")

    second = _tick(sensors.text_batch_sensor, instance, tmp_path, first.cursor)

    assert second.run_requests == []
    assert instance.get_dynamic_partitions(text_batches.name) == []


def test_label_sensor_waits_for_unregistered_texts(instance, tmp_path):
    _write(tmp_path / "texts", "texts.csv", "id,text\nt1,one\n")
    _write(tmp_path / "labels", "labels.csv", "text_id,label\nt1,x\n")

    waiting = _tick(sensors.label_batch_sensor, instance, tmp_path, None)
    texts = _tick(sensors.text_batch_sensor, instance, tmp_path, None)
    _apply_partition_requests(instance, texts)
    ready = _tick(sensors.label_batch_sensor, instance, tmp_path, None)

    assert waiting.run_requests == []
    assert "texts.csv" in waiting.skip_reason.skip_message
    assert waiting.cursor is None
    assert [request.partition_key for request in ready.run_requests] == ["labels.csv"]
    assert ready.dynamic_partitions_requests[0].partitions_def_name == label_batches.name


def test_label_sensor_ignores_old_unregistered_text(instance, tmp_path):
    _write(tmp_path / "texts", "withdrawn.csv", "id,text\nt1,one\n", age=sensors.TEXT_REGISTRATION_GRACE_SECONDS + 60)
    _write(tmp_path / "labels", "labels.csv", "text_id,label\nt1,x\n")

    result = _tick(sensors.label_batch_sensor, instance, tmp_path, None)

    assert [request.partition_key for request in result.run_requests] == ["labels.csv"]


def test_sensor_rejects_cursor_of_unknown_format(instance, tmp_path):
    with pytest.raises(ValueError, match="Reset the sensor's cursor"):
        _tick(sensors.text_batch_sensor, instance, tmp_path, json.dumps({"format": 99, "files": {}}))


# ----------------------------------------------------------------- nightly schedule


def test_nightly_schedule_defaults_to_two_utc(monkeypatch):
    monkeypatch.delenv("EMBETTER_NIGHTLY_CRON", raising=False)
    monkeypatch.delenv("EMBETTER_NIGHTLY_TIMEZONE", raising=False)

    schedule = build_nightly_schedule()

    assert schedule.cron_schedule == "0 2 * * *"
    assert schedule.execution_timezone == "UTC"
    assert schedule.job_name == "refinetune"


def test_nightly_schedule_reads_cron_and_timezone(monkeypatch):
    monkeypatch.setenv("EMBETTER_NIGHTLY_CRON", "30 3 * * 1-5")
    monkeypatch.setenv("EMBETTER_NIGHTLY_TIMEZONE", "Europe/Berlin")

    schedule = build_nightly_schedule()

    assert schedule.cron_schedule == "30 3 * * 1-5"
    assert schedule.execution_timezone == "Europe/Berlin"


@pytest.mark.parametrize(("cron", "timezone", "variable"), [("61 2 * * *", "UTC", "EMBETTER_NIGHTLY_CRON"), ("0 2 * * *", "Mars/Olympus", "EMBETTER_NIGHTLY_TIMEZONE")])
def test_nightly_schedule_rejects_bad_settings(cron, timezone, variable):
    with pytest.raises(ValueError, match=variable) as raised:
        build_nightly_schedule(cron, timezone)

    assert repr(cron if variable.endswith("CRON") else timezone) in str(raised.value)
    assert ".. " not in str(raised.value)
    assert str(raised.value).endswith(".")


def test_nightly_schedule_run_key_is_scheduled_time():
    schedule = build_nightly_schedule("0 2 * * *", "Europe/Berlin")
    scheduled = datetime.datetime(2025, 3, 4, 2, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))

    first = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=scheduled))
    second = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=scheduled))

    assert len(first.run_requests) == 1
    assert first.run_requests[0].run_key == "nightly-refinetune-2025-03-04T02:00:00+01:00"
    assert second.run_requests[0].run_key == first.run_requests[0].run_key
    assert first.run_requests[0].tags["embetter/trigger"] == "nightly"


# ----------------------------------------------------------------- automation conditions


def _report(instance, asset: str, partition: str | None = None) -> None:
    instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=asset, partition=partition))


def _requested(result) -> dict[str, set]:
    names = ["trained_finetuner", "finetuned_embeddings", "evaluation_report"]
    requested = {name: set(result.get_requested_partitions(dg.AssetKey(name))) for name in names}
    return {name: partitions for name, partitions in requested.items() if partitions}


def test_automation_follows_new_label_batch(instance):
    from embetter_assets.definitions import defs

    instance.add_dynamic_partitions(text_batches.name, ["t1.csv", "t2.csv"])
    instance.add_dynamic_partitions(label_batches.name, ["l1.csv"])
    for key in ["t1.csv", "t2.csv"]:
        _report(instance, "raw_texts", key)
        _report(instance, "base_embeddings", key)
    start = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    _report(instance, "labelled_subset", "l1.csv")
    after_labels = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)
    _report(instance, "trained_finetuner")
    after_finetuner = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_labels.cursor)
    for key in ["t1.csv", "t2.csv"]:
        _report(instance, "finetuned_embeddings", key)
    after_embeddings = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_finetuner.cursor)
    _report(instance, "evaluation_report")
    settled = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=after_embeddings.cursor)

    assert _requested(start) == {}
    assert _requested(after_labels) == {"trained_finetuner": {None}}
    assert _requested(after_finetuner).get("finetuned_embeddings") == {"t1.csv", "t2.csv"}
    assert "evaluation_report" not in _requested(after_finetuner)
    assert "evaluation_report" in _requested(after_embeddings)
    assert "trained_finetuner" not in _requested(settled)
    assert "evaluation_report" not in _requested(settled)


def test_automation_embeds_new_text_batch(instance):
    from embetter_assets.definitions import defs

    instance.add_dynamic_partitions(text_batches.name, ["t1.csv"])
    _report(instance, "base_embeddings", "t1.csv")
    _report(instance, "trained_finetuner")
    _report(instance, "finetuned_embeddings", "t1.csv")
    start = dg.evaluate_automation_conditions(defs=defs, instance=instance)

    instance.add_dynamic_partitions(text_batches.name, ["t2.csv"])
    waiting = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=start.cursor)
    _report(instance, "raw_texts", "t2.csv")
    _report(instance, "base_embeddings", "t2.csv")
    ready = dg.evaluate_automation_conditions(defs=defs, instance=instance, cursor=waiting.cursor)

    assert "finetuned_embeddings" not in _requested(waiting)
    assert _requested(ready).get("finetuned_embeddings") == {"t2.csv"}
    assert "trained_finetuner" not in _requested(ready)
