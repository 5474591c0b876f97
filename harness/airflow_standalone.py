"""A running Airflow (``airflow standalone``: API server, scheduler, DAG processor, triggerer on
SQLite) with this project's plugins, for end-to-end tests and the demo, plus a small REST client.

The instance has its own ``AIRFLOW_HOME``, a free API port on loopback, the SimpleAuthManager with
one admin (password in a 0600 file), and the given DAGs folder and spec folder.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import free_port, log_tail, process_alive, write_private_json

REPO = Path(__file__).resolve().parents[1]  # harness/ is at the repository root
USER = "admin"
PASSWORD = "metabackup-e2e-admin"
COMPONENTS = ("metadatabase", "scheduler", "dag_processor", "triggerer")


@dataclass
class StandaloneAirflow:
    home: Path
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self) -> AirflowClient:
        return AirflowClient(self.url, USER, PASSWORD)

    def log_tail(self, lines: int = 60) -> str:
        return log_tail(self.home / "standalone.log", lines)

    def stop(self, timeout: float = 60) -> None:
        if self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        try:  # the components run in the same process group; make sure none is left
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def start(home: str | Path, dags_folder: str | Path, spec_dir: str | Path, env: dict[str, str] | None = None,
          timeout: float = 420) -> StandaloneAirflow:
    home = Path(home).resolve()
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    passwords = write_private_json(home / "passwords.json", {USER: PASSWORD})
    environment = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(Path(dags_folder).resolve()),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(passwords),
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        "AIRFLOW__API__PORT": str(port),
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__BASE_URL": f"http://127.0.0.1:{port}",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "5",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
        "METABACKUP_SPEC_DIR": str(Path(spec_dir).resolve()),
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO / "plugins"), os.environ.get("PYTHONPATH")])),
        # standalone starts its components as `airflow ...` from PATH: this interpreter's
        "PATH": os.pathsep.join([str(Path(sys.executable).parent), os.environ.get("PATH", "")]),
        **(env or {}),
    }
    log = open(home / "standalone.log", "ab")  # noqa: SIM115 - handed to the child
    airflow = Path(sys.executable).with_name("airflow")
    process = subprocess.Popen([str(airflow), "standalone"], env=environment, stdout=log, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL, start_new_session=True, cwd=home)
    instance = StandaloneAirflow(home, port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"airflow standalone exited with {process.returncode}:\n{instance.log_tail()}")
        if _healthy(instance.url):
            return instance
        time.sleep(1)
    instance.stop()
    raise RuntimeError(f"airflow standalone was not healthy within {timeout}s:\n{instance.log_tail()}")


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/api/v2/monitor/health", timeout=5) as response:
            health = json.loads(response.read())
    except (OSError, ValueError):
        return False
    return all(health.get(c, {}).get("status") == "healthy" for c in COMPONENTS)


class AirflowError(RuntimeError):
    pass


class AirflowClient:
    """Airflow's REST API v2 with a JWT from ``POST /auth/token``."""

    def __init__(self, url: str, username: str, password: str):
        self.url = url
        self.token = self._post("/auth/token", {"username": username, "password": password}, auth=False)["access_token"]

    def _request(self, method: str, path: str, body: Any = None, auth: bool = True) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(f"{self.url}{path}", data=data, method=method,
                                         headers={"Content-Type": "application/json", "Accept": "application/json"})
        if auth:
            request.add_header("Authorization", f"Bearer {self.token}")
        try:
            with urllib.request.urlopen(request, timeout=60) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raise AirflowError(f"{method} {path}: HTTP {exc.code} {exc.read()[:2000].decode(errors='replace')}") from None
        content_type = response.headers.get("Content-Type", "")
        return json.loads(raw) if raw and "json" in content_type else raw.decode(errors="replace")

    def _post(self, path: str, body: Any, auth: bool = True) -> Any:
        return self._request("POST", path, body, auth)

    def get(self, path: str) -> Any:
        return self._request("GET", path)

    def import_errors(self) -> list[dict[str, Any]]:
        return self.get("/api/v2/importErrors")["import_errors"]

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> dict[str, Any]:
        """Wait until the DAG processor has parsed ``dag_id``; unpause it."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                dag = self.get(f"/api/v2/dags/{dag_id}")
                if dag.get("is_paused"):
                    self._request("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
                return dag
            except AirflowError as exc:
                if "404" not in str(exc):
                    raise
            time.sleep(1)
        raise AirflowError(f"DAG {dag_id} did not appear within {timeout}s; import errors: {self.import_errors()}")

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        run = self._post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})
        return run["dag_run_id"]

    def clear(self, dag_id: str, run_id: str, task_ids: list[str]) -> None:
        """Clear tasks of a run (as the UI's *Clear*): they run again, as their next try, in the same run."""
        self._post(f"/api/v2/dags/{dag_id}/clearTaskInstances",
                   {"dry_run": False, "dag_run_id": run_id, "task_ids": task_ids, "only_failed": False,
                    "reset_dag_runs": True, "include_upstream": False, "include_downstream": False})

    def wait(self, dag_id: str, run_id: str, timeout: float = 300) -> dict[str, Any]:
        """Wait for a run to end; return its state and task states (with logs of failed tasks)."""
        quoted = urllib.parse.quote(run_id, safe="")
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}")
            if run["state"] in ("success", "failed"):
                tasks = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted}/taskInstances")["task_instances"]
                states = {t["task_id"]: t["state"] for t in tasks}
                logs = {}
                for t in tasks:
                    if t["state"] == "failed":
                        logs[t["task_id"]] = self._task_log(dag_id, quoted, t)
                return {"state": run["state"], "tasks": states, "failed_logs": logs}
            time.sleep(1)
        raise AirflowError(f"run {run_id} of {dag_id} did not finish within {timeout}s")

    def _task_log(self, dag_id: str, quoted_run: str, task: dict[str, Any]) -> str:
        try:
            content = self.get(f"/api/v2/dags/{dag_id}/dagRuns/{quoted_run}/taskInstances/{task['task_id']}"
                               f"/logs/{task.get('try_number') or 1}?full_content=true")
        except AirflowError as exc:
            return str(exc)
        if isinstance(content, dict):
            items = content.get("content", [])
            return "\n".join(i.get("event", str(i)) if isinstance(i, dict) else str(i) for i in items)[-4000:]
        return str(content)[-4000:]


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m harness.airflow_standalone")
    parser.add_argument("home")
    parser.add_argument("--dags", default=str(REPO / "dags"))
    parser.add_argument("--specs", default=str(REPO / "include" / "backup_tasks"))
    args = parser.parse_args(argv)
    instance = start(args.home, args.dags, args.specs)
    print(json.dumps({"url": instance.url, "user": USER, "password_file": str(instance.home / "passwords.json"),
                      "pid": instance.process.pid}))
    try:
        while process_alive(instance.process.pid):
            time.sleep(1)
    except KeyboardInterrupt:
        instance.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
