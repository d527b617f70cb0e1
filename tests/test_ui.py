"""The Dagster UI as a user drives it: the webserver and daemon on loopback, then headless Chromium.

One webserver and one daemon serve the whole module. The GraphQL requests below are the ones
the UI's own pages send (the query texts are trimmed to the fields the tests read).
"""

from __future__ import annotations

import html.parser
import re
import shutil
import subprocess
import time
import urllib.parse
from pathlib import Path

import duckdb
import polars as pl
import pytest
from PIL import Image

from embetter_assets.definitions import defs
from embetter_assets.demo import load_bbc_news
from embetter_assets.encoder import DEFAULT_MODEL
from ui_server import DagsterServer, ServerError

CORE_ASSETS = {
    "raw_texts",
    "base_embeddings",
    "labelled_subset",
    "trained_finetuner",
    "finetuned_embeddings",
    "evaluation_report",
}
BATCH_FILE = "bbc_headlines.csv"
N_TEXTS = 10

READY_TIMEOUT_SECONDS = 120
DAEMON_TIMEOUT_SECONDS = 60
# The run starts a worker process and, with the default multiprocess executor, one process per
# step. Each of them imports torch, and the embedding step also loads the encoder.
RUN_TIMEOUT_SECONDS = 180
TERMINAL_RUN_STATUSES = {"SUCCESS", "FAILURE", "CANCELED"}

CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
WINDOW_SIZE = (1920, 1080)
# Virtual time the page may use before Chromium dumps the DOM and takes the screenshot. The
# second budget is tried only when the graph was not drawn within the first.
VIRTUAL_TIME_BUDGETS_MS = (15_000, 40_000)
CHROMIUM_TIMEOUT_SECONDS = 120
# A blank page has one colour, and the drawn graph of seven assets had 2,709 at 1920x1080.
MIN_SCREENSHOT_COLOURS = 256
# Phrases the Dagster UI (1.13) shows when a page, a query or the code location fails.
ERROR_PHRASES = (
    "Python Error",
    "Python error",
    "PythonError",
    "Traceback (most recent call last)",
    "Unknown error",
    "An unexpected error",
    "An error occurred",
    "An unknown error occurred",
    "Code location error",
    "Code location failed to load",
    "GraphQL Error",
    "Query Error",
    "Application error",
    "Internal Server Error",
    "Failed to fetch",
    "NetworkError",
    "Page not found",
    "View error",
)


@pytest.fixture(scope="module")
def dagster_server(tmp_path_factory):
    server = DagsterServer(tmp_path_factory.mktemp("dagster_ui"))
    try:
        server.start(READY_TIMEOUT_SECONDS)
        yield server
    finally:
        server.stop()


# ----------------------------------------------------------------------------- GraphQL

REPOSITORY_QUERY = """
query Repositories {
  repositoriesOrError {
    __typename
    ... on RepositoryConnection {
      nodes {
        name
        location { name }
        sensors { name }
        schedules { name }
        assetNodes {
          assetKey { path }
          groupName
          jobNames
          assetChecksOrError {
            __typename
            ... on AssetChecks { checks { name jobNames } }
          }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""

DAEMON_HEALTH_QUERY = """
query DaemonHealth {
  instance { daemonHealth { allDaemonStatuses { daemonType required healthy } } }
}
"""

ADD_DYNAMIC_PARTITION_MUTATION = """
mutation AddDynamicPartition($partitionsDefName: String!, $partitionKey: String!, $repositorySelector: RepositorySelector!) {
  addDynamicPartition(partitionsDefName: $partitionsDefName, partitionKey: $partitionKey, repositorySelector: $repositorySelector) {
    __typename
    ... on AddDynamicPartitionSuccess { partitionsDefName partitionKey }
    ... on Error { message }
  }
}
"""

PARTITION_TAGS_QUERY = """
query ConfigPartitionForAssetJob($repositoryName: String!, $repositoryLocationName: String!, $jobName: String!, $partitionName: String!, $assetKeys: [AssetKeyInput!]!) {
  pipelineOrError(params: {pipelineName: $jobName, repositoryName: $repositoryName, repositoryLocationName: $repositoryLocationName}) {
    __typename
    ... on Pipeline {
      partition(partitionName: $partitionName, selectedAssetKeys: $assetKeys) {
        runConfigOrError { __typename ... on PartitionRunConfig { yaml } ... on PythonError { message } }
        tagsOrError { __typename ... on PartitionTags { results { key value } } ... on PythonError { message } }
      }
    }
    ... on Error { message }
  }
}
"""

LAUNCH_MUTATION = """
mutation LaunchPipelineExecution($executionParams: ExecutionParams!) {
  launchPipelineExecution(executionParams: $executionParams) {
    __typename
    ... on LaunchRunSuccess { run { id pipelineName } }
    ... on RunConfigValidationInvalid { errors { message } }
    ... on Error { message }
  }
}
"""

RUN_STATUS_QUERY = """
query RunStatus($runId: ID!) {
  runOrError(runId: $runId) {
    __typename
    ... on Run { status tags { key value } }
    ... on Error { message }
  }
}
"""

RUN_ERRORS_QUERY = """
query RunErrors($runId: ID!) {
  logsForRun(runId: $runId) {
    __typename
    ... on EventConnection {
      events {
        __typename
        ... on MessageEvent { message level stepKey }
        ... on ErrorEvent { error { message } }
      }
    }
  }
}
"""

ASSET_MATERIALIZATIONS_QUERY = """
query AssetMaterializations($assetKey: AssetKeyInput!, $partitions: [String!]) {
  assetOrError(assetKey: $assetKey) {
    __typename
    ... on Asset { assetMaterializations(partitions: $partitions) { runId partition } }
  }
}
"""


def loaded_repository(server: DagsterServer) -> dict:
    """Return the one repository the webserver loaded, as the UI's GraphQL API describes it."""
    result = server.graphql(REPOSITORY_QUERY)["repositoriesOrError"]
    assert result["__typename"] == "RepositoryConnection", result
    repositories = result["nodes"]
    assert len(repositories) == 1, [repository["name"] for repository in repositories]
    return repositories[0]


def asset_name(node: dict) -> str:
    return "/".join(node["assetKey"]["path"])


def wait_for_run_queue_daemon(server: DagsterServer) -> None:
    """Wait until the daemon's queued-run coordinator, which starts the runs the UI queues, is healthy."""
    deadline = time.monotonic() + DAEMON_TIMEOUT_SECONDS
    statuses = []
    while time.monotonic() < deadline:
        server.check_running()
        statuses = server.graphql(DAEMON_HEALTH_QUERY)["instance"]["daemonHealth"]["allDaemonStatuses"]
        if any(status["daemonType"] == "QUEUED_RUN_COORDINATOR" and status["healthy"] for status in statuses):
            return
        time.sleep(1)
    raise ServerError(
        f"Timed out after {DAEMON_TIMEOUT_SECONDS} s waiting for the daemon's QUEUED_RUN_COORDINATOR to be "
        f"healthy: {statuses}\n"
        f"{server.logs_tail()}"
    )


def wait_for_run(server: DagsterServer, run_id: str) -> dict:
    """Poll a run until it ends and return its ``Run`` fields, or fail with its errors after the timeout."""
    deadline = time.monotonic() + RUN_TIMEOUT_SECONDS
    run = {}
    while time.monotonic() < deadline:
        server.check_running()
        run = server.graphql(RUN_STATUS_QUERY, {"runId": run_id})["runOrError"]
        assert run["__typename"] == "Run", run
        if run["status"] in TERMINAL_RUN_STATUSES:
            return run
        time.sleep(1)
    pytest.fail(
        f"Timed out after {RUN_TIMEOUT_SECONDS} s waiting for run {run_id}, still {run.get('status')}.\n"
        f"{run_errors(server, run_id)}\n{server.logs_tail()}"
    )


def run_errors(server: DagsterServer, run_id: str) -> str:
    """Return the error messages of a run's event log, one per line, for failure messages."""
    logs = server.graphql(RUN_ERRORS_QUERY, {"runId": run_id})["logsForRun"]
    if logs["__typename"] != "EventConnection":
        return f"(no event log: {logs['__typename']})"
    lines = []
    for event in logs["events"]:
        if event.get("error"):
            lines.append(f"{event['__typename']} {event.get('stepKey') or ''}: {event['error']['message']}")
        elif event.get("level") in ("ERROR", "CRITICAL"):
            lines.append(f"{event['__typename']} {event.get('stepKey') or ''}: {event['message']}")
    return "\n".join(lines) or "(no errors in the event log)"


def write_headline_batch(texts_dir: Path) -> Path:
    """Write the headlines of ten BBC News articles, two per topic, as a CSV text batch."""
    articles = load_bbc_news(limit_per_topic=N_TEXTS // 5)
    headlines = articles.select("id", pl.col("text").str.split("\n").list.first().str.strip_chars().alias("text"))
    path = texts_dir / BATCH_FILE
    headlines.write_csv(path)
    return path


# ----------------------------------------------------------------------------- webserver and daemon


@pytest.mark.slow
def test_webserver_loads_every_definition(dagster_server):
    repository = loaded_repository(dagster_server)
    declared = defs.get_repository_def()
    assets = {asset_name(node) for node in repository["assetNodes"]}

    assert CORE_ASSETS <= assets
    assert assets == {key.to_user_string() for key in declared.asset_graph.get_all_asset_keys()}
    assert {sensor["name"] for sensor in repository["sensors"]} == {sensor.name for sensor in declared.sensor_defs}
    assert {schedule["name"] for schedule in repository["schedules"]} == {
        schedule.name for schedule in declared.schedule_defs
    }


@pytest.mark.slow
def test_ui_launch_materializes_partition(dagster_server):
    write_headline_batch(dagster_server.data_dir / "texts")
    repository = loaded_repository(dagster_server)
    selector = {"repositoryName": repository["name"], "repositoryLocationName": repository["location"]["name"]}
    wait_for_run_queue_daemon(dagster_server)

    # The UI's "Add partition" dialog.
    added = dagster_server.graphql(
        ADD_DYNAMIC_PARTITION_MUTATION,
        {"partitionsDefName": "text_batches", "partitionKey": BATCH_FILE, "repositorySelector": selector},
    )["addDynamicPartition"]
    assert added["__typename"] == "AddDynamicPartitionSuccess", added

    # The "Materialize" button on a partitioned selection: one run of the asset job, carrying the
    # partition's tags and config, with the selected assets and their checks.
    selected = [node for node in repository["assetNodes"] if asset_name(node) in ("raw_texts", "base_embeddings")]
    job_names = set.intersection(*(set(node["jobNames"]) for node in selected))
    job_name = min(name for name in job_names if name.startswith("__ASSET_JOB"))
    asset_keys = [{"path": node["assetKey"]["path"]} for node in selected]
    partition = dagster_server.graphql(
        PARTITION_TAGS_QUERY,
        {**selector, "jobName": job_name, "partitionName": BATCH_FILE, "assetKeys": asset_keys},
    )["pipelineOrError"]["partition"]
    assert partition["tagsOrError"]["__typename"] == "PartitionTags", partition
    assert partition["runConfigOrError"]["__typename"] == "PartitionRunConfig", partition
    tags = [tag for tag in partition["tagsOrError"]["results"] if tag["key"] != "dagster/from_ui"]
    checks = [
        {"assetKey": {"path": node["assetKey"]["path"]}, "name": check["name"]}
        for node in selected
        if node["assetChecksOrError"]["__typename"] == "AssetChecks"
        for check in node["assetChecksOrError"]["checks"]
        if job_name in check["jobNames"]
    ]
    execution_params = {
        "mode": "default",
        "executionMetadata": {"tags": [*tags, {"key": "dagster/from_ui", "value": "true"}]},
        "runConfigData": partition["runConfigOrError"]["yaml"] or "{}",
        "selector": {**selector, "pipelineName": job_name, "assetSelection": asset_keys, "assetCheckSelection": checks},
    }
    launched = dagster_server.graphql(LAUNCH_MUTATION, {"executionParams": execution_params})["launchPipelineExecution"]
    assert launched["__typename"] == "LaunchRunSuccess", launched
    run_id = launched["run"]["id"]

    run = wait_for_run(dagster_server, run_id)
    assert run["status"] == "SUCCESS", f"{run_errors(dagster_server, run_id)}\n{dagster_server.logs_tail()}"
    assert {"key": "dagster/partition", "value": BATCH_FILE} in run["tags"]

    for name in ("raw_texts", "base_embeddings"):
        asset = dagster_server.graphql(
            ASSET_MATERIALIZATIONS_QUERY, {"assetKey": {"path": [name]}, "partitions": [BATCH_FILE]}
        )["assetOrError"]
        assert asset["__typename"] == "Asset", asset
        assert {"runId": run_id, "partition": BATCH_FILE} in asset["assetMaterializations"], name

    with duckdb.connect(str(dagster_server.store_path), read_only=True) as connection:
        n_texts = connection.execute("SELECT count(*) FROM texts WHERE batch = ?", [BATCH_FILE]).fetchone()[0]
        n_embedded = connection.execute(
            """
            SELECT count(*) FROM texts JOIN base_embeddings USING (content_hash)
            WHERE texts.batch = ? AND base_embeddings.model = ?
            """,
            [BATCH_FILE, DEFAULT_MODEL],
        ).fetchone()[0]
    assert n_texts == N_TEXTS
    assert n_embedded == N_TEXTS


# ----------------------------------------------------------------------------- headless Chromium


class _VisibleText(html.parser.HTMLParser):
    """Collect the text a reader sees in an HTML document: everything outside script and style."""

    _HIDDEN = {"script", "style", "noscript", "template"}

    def __init__(self):
        super().__init__()
        self.parts: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag, attrs):
        if tag in self._HIDDEN:
            self._hidden_depth += 1

    def handle_endtag(self, tag):
        if tag in self._HIDDEN and self._hidden_depth:
            self._hidden_depth -= 1

    def handle_data(self, data):
        if not self._hidden_depth:
            self.parts.append(data)


def visible_text(document: str) -> str:
    """Return the visible text of an HTML document, whitespace collapsed to single spaces."""
    parser = _VisibleText()
    parser.feed(document)
    parser.close()
    return " ".join(" ".join(parser.parts).split())


def shows_name(text: str, name: str) -> bool:
    """Tell whether ``text`` shows ``name`` whole, or shortened in the middle as ``head…tail``.

    The asset graph shortens long names in the middle when it draws nodes small.
    """
    if name in text:
        return True
    return any(
        name.startswith(head) and name.endswith(tail) and len(head) + len(tail) < len(name)
        for head, tail in re.findall(r"(\S+)…(\S+)", text)
    )


def error_phrases_in(text: str) -> list[str]:
    """Return the error phrases of the Dagster UI that occur in ``text``."""
    return [phrase for phrase in ERROR_PHRASES if phrase in text]


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium executable on PATH; the test skips without one.

    Session-scoped so that pytest resolves it before the module's server, and a skip starts none.
    """
    for name in CHROMIUM_CANDIDATES:
        path = shutil.which(name)
        if path:
            return path
    pytest.skip(
        "No Chromium found on PATH (looked for chromium, chromium-browser). Install Debian's package "
        "with `apt-get install chromium`; .ci/run does so when apt-get is available."
    )


def render_page(chromium: str, url: str, screenshot: Path, profile: Path, budget_ms: int) -> str:
    """Load ``url`` in headless Chromium, save a screenshot and return the DOM after scripts ran.

    Chromium may reach only 127.0.0.1: every other host name fails to resolve, and component
    updates, sync and other background requests are off.
    """
    width, height = WINDOW_SIZE
    command = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-quic",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
        f"--virtual-time-budget={budget_ms}",
        f"--screenshot={screenshot}",
        "--dump-dom",
        url,
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=CHROMIUM_TIMEOUT_SECONDS)
    assert result.returncode == 0, f"{chromium} exited with code {result.returncode}:\n{result.stderr[-3000:]}"
    return result.stdout


def asset_graph_url(server: DagsterServer, repository: dict) -> str:
    """Return the URL of the global asset graph with every asset group expanded.

    The page collapses groups when there are several. In the Dagster 1.13 UI, group ids have the
    form ``global@global:<group>``, or ``<repository>@<location>:<group>`` when its per-location
    groups flag is on. Both forms are listed, so the page expands the groups either way.
    """
    groups = sorted({node["groupName"] for node in repository["assetNodes"] if node["groupName"]})
    location = f"{repository['name']}@{repository['location']['name']}"
    expanded = [f"global@global:{group}" for group in groups] + [f"{location}:{group}" for group in groups]
    return f"{server.url}/asset-groups?{urllib.parse.urlencode({'expanded': ','.join(expanded)})}"


def test_visible_text_skips_scripts():
    document = "<html><head><script>var e = 'PythonError';</script><style>p{}</style></head><body><p>raw_texts</p><p>ok</p></body></html>"

    assert visible_text(document) == "raw_texts ok"


def test_shows_name_accepts_middle_truncation():
    assert shows_name("x finetu…_embeddings y", "finetuned_embeddings")
    assert shows_name("raw_texts", "raw_texts")
    assert not shows_name("finetu…_reports", "finetuned_embeddings")
    assert not shows_name("raw_text", "raw_texts")


def test_error_phrases_found_in_error_page():
    assert error_phrases_in("Lineage Python Error dagster._core.errors ...") == ["Python Error"]
    assert error_phrases_in("Code locations broken.py Failed View error") == ["View error"]
    assert error_phrases_in("Global asset lineage raw_texts base_embeddings") == []


@pytest.mark.slow
def test_asset_graph_page_shows_assets(chromium, dagster_server, tmp_path):
    repository = loaded_repository(dagster_server)
    names = sorted(asset_name(node) for node in repository["assetNodes"])
    url = asset_graph_url(dagster_server, repository)
    screenshot = tmp_path / "asset_graph.png"

    # A second, longer try only when the graph had not finished drawing within the first budget.
    for attempt, budget_ms in enumerate(VIRTUAL_TIME_BUDGETS_MS):
        text = visible_text(render_page(chromium, url, screenshot, tmp_path / f"profile{attempt}", budget_ms))
        missing = [name for name in names if not shows_name(text, name)]
        if not missing and "Global asset lineage" in text:
            break

    assert error_phrases_in(text) == [], f"{url} shows an error:\n{text[:3000]}"
    assert "Global asset lineage" in text, f"{url} is not the asset graph page:\n{text[:3000]}"
    assert missing == [], f"{url} lacks assets {missing}; its text:\n{text[:3000]}"
    assert screenshot.is_file(), f"Chromium wrote no screenshot to {screenshot}"
    with Image.open(screenshot) as image:
        assert image.format == "PNG"
        assert image.size == WINDOW_SIZE
        colours = image.convert("RGB").getcolors(maxcolors=MIN_SCREENSHOT_COLOURS)
    assert colours is None, f"{screenshot} has only {len(colours)} colours; the page looks blank"
