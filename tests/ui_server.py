"""Run the Dagster webserver and daemon on loopback for the UI tests, and send GraphQL requests to them.

Both processes use a temporary Dagster home (telemetry off) and a temporary data folder, so a
test never touches the repository's ``data/``. They load the repository's ``workspace.yaml``
from the repository root, as ``make dev`` does.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from embetter_assets.defs.automation import AUTOMATION_VARIABLE
from embetter_assets.store import DATA_DIR_VARIABLE, PATH_VARIABLE

REPO_ROOT = Path(__file__).resolve().parents[1]
WORKSPACE_FILE = REPO_ROOT / "workspace.yaml"
# The console scripts installed beside the interpreter that runs the tests (.venv/bin).
SCRIPTS_DIR = Path(sys.executable).parent

# Telemetry is off, and so is the "join the community" dialog, because it would cover the page and
# load a form from dagster.io.
INSTANCE_SETTINGS = "telemetry:\n  enabled: false\nnux:\n  enabled: false\n"
LOG_TAIL_CHARACTERS = 4000
STOP_TIMEOUT_SECONDS = 20.0


class ServerError(RuntimeError):
    """Raised when the webserver or daemon fails to start, or a GraphQL request fails."""


def free_loopback_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class DagsterServer:
    """A ``dagster-webserver`` and a ``dagster-daemon`` sharing one temporary Dagster home.

    Parameters
    ----------
    root
        An empty folder. It receives ``dagster_home/``, ``data/`` and the two processes' logs.
    """

    def __init__(self, root: Path):
        self.root = Path(root)
        self.home = self.root / "dagster_home"
        self.data_dir = self.root / "data"
        self.store_path = self.data_dir / "embetter.duckdb"
        self.port = free_loopback_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._processes: dict[str, subprocess.Popen] = {}
        self._logs: dict[str, Path] = {}

    def environment(self) -> dict[str, str]:
        """Return the environment of both processes: the temporary home and data folder, offline.

        Sensors and schedules start stopped, so the only runs are the ones a test launches.
        """
        env = dict(os.environ)
        env.update(
            {
                "DAGSTER_HOME": str(self.home),
                DATA_DIR_VARIABLE: str(self.data_dir),
                PATH_VARIABLE: str(self.store_path),
                AUTOMATION_VARIABLE: "stopped",
                "HF_HUB_OFFLINE": "1",
                "TOKENIZERS_PARALLELISM": "false",
                "PYTHONUNBUFFERED": "1",
            }
        )
        return env

    def start(self, timeout: float) -> None:
        """Start the webserver, wait until it is ready, then start the daemon.

        The daemon starts only once the webserver has created the instance's SQLite storage:
        two processes creating it at once can leave two rows in its ``alembic_version`` table,
        and then neither loads the code location (seen with Dagster 1.13.28). Call :meth:`stop`
        afterwards, even when this raises.
        """
        self.home.mkdir(parents=True, exist_ok=True)
        (self.home / "dagster.yaml").write_text(INSTANCE_SETTINGS)
        (self.data_dir / "texts").mkdir(parents=True, exist_ok=True)
        (self.data_dir / "labels").mkdir(parents=True, exist_ok=True)

        self._spawn(
            "webserver",
            ["dagster-webserver", "-h", "127.0.0.1", "-p", str(self.port), "-w", str(WORKSPACE_FILE)],
        )
        self.wait_until_ready(timeout)
        self._spawn("daemon", ["dagster-daemon", "run", "-w", str(WORKSPACE_FILE)])

    def _spawn(self, name: str, command: list[str]) -> None:
        executable = SCRIPTS_DIR / command[0]
        if not executable.exists():
            raise ServerError(f"{executable} not found; install the project with `make install`.")
        log_path = self.root / f"{name}.log"
        self._logs[name] = log_path
        with log_path.open("wb") as log:
            # A new session per process, so stop() can end the code servers and run workers it spawns.
            self._processes[name] = subprocess.Popen(
                [str(executable), *command[1:]],
                cwd=REPO_ROOT,
                env=self.environment(),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def stop(self) -> None:
        """Terminate both processes and everything they spawned; kill them if they hang."""
        for process in self._processes.values():
            if process.poll() is None:
                _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_SECONDS
        for process in self._processes.values():
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pass
            # Children such as code servers may outlive their parent, so the group gets SIGKILL too.
            _signal_group(process, signal.SIGKILL)
            process.wait()

    def log_tail(self, name: str) -> str:
        """Return the end of a process's combined stdout and stderr."""
        path = self._logs.get(name)
        if path is None or not path.exists():
            return "(no log)"
        return path.read_text(errors="replace")[-LOG_TAIL_CHARACTERS:]

    def logs_tail(self) -> str:
        """Return the end of both processes' logs, labelled, for failure messages."""
        return "\n".join(f"--- {name} log ({self._logs[name]}) ---\n{self.log_tail(name)}" for name in self._logs)

    def check_running(self) -> None:
        """Raise :class:`ServerError` with the log tails if a started process has exited."""
        for name, process in self._processes.items():
            if process.poll() is not None:
                raise ServerError(f"dagster {name} exited with code {process.returncode}.\n{self.logs_tail()}")

    def wait_until_ready(self, timeout: float) -> None:
        """Wait until the webserver responds to GraphQL requests and the code location has loaded.

        Raises :class:`ServerError` with both log tails when a process exits, when the code
        location fails to load, or after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        last_problem = "no answer yet"
        while time.monotonic() < deadline:
            self.check_running()
            try:
                workspace = self.graphql(LOCATION_STATUS_QUERY)["workspaceOrError"]
            except (OSError, ServerError) as error:
                last_problem = str(error)
                time.sleep(0.5)
                continue
            if workspace["__typename"] != "Workspace":
                raise ServerError(f"The webserver could not list its workspace: {workspace}\n{self.logs_tail()}")

            entries = workspace["locationEntries"]
            statuses = [entry["locationOrLoadError"] for entry in entries]
            failed = [status for status in statuses if status and status["__typename"] == "PythonError"]
            if failed:
                raise ServerError(f"The code location failed to load: {failed[0]['message']}\n{self.logs_tail()}")
            if entries and all(status and status["__typename"] == "RepositoryLocation" for status in statuses):
                return
            last_problem = f"code location still loading: {[entry['name'] for entry in entries]}"
            time.sleep(0.5)
        raise ServerError(
            f"Timed out after {timeout:.0f} s waiting for the Dagster webserver at {self.url} ({last_problem}).\n"
            f"{self.logs_tail()}"
        )

    def graphql(self, query: str, variables: dict | None = None, timeout: float = 30.0) -> dict:
        """POST a GraphQL request to the webserver and return its ``data``.

        Raises :class:`ServerError` when the response carries GraphQL errors, and ``OSError``
        (``urllib.error.URLError``) when the server cannot be reached.
        """
        body = json.dumps({"query": query, "variables": variables or {}}).encode("utf-8")
        request = urllib.request.Request(
            f"{self.url}/graphql", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                payload = json.loads(response.read())
        except urllib.error.HTTPError as error:
            raise ServerError(f"GraphQL request failed with HTTP {error.code}: {error.read()[:2000]!r}") from error
        if payload.get("errors"):
            raise ServerError(f"GraphQL errors: {json.dumps(payload['errors'])[:2000]}")
        return payload["data"]


def _signal_group(process: subprocess.Popen, sig: signal.Signals) -> None:
    try:
        os.killpg(process.pid, sig)
    except ProcessLookupError:
        pass


LOCATION_STATUS_QUERY = """
query LocationStatus {
  workspaceOrError {
    __typename
    ... on Workspace {
      locationEntries {
        name
        locationOrLoadError {
          __typename
          ... on PythonError { message }
        }
      }
    }
    ... on PythonError { message }
  }
}
"""
