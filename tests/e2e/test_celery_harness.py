"""The CeleryExecutor harness (issue 16): Redis, PostgreSQL, the API server, scheduler, DAG
processor and two Celery workers on two queues; each task runs on the worker of its queue, and a
worker killed with SIGKILL mid-task takes its task process with it and can be started again."""

from __future__ import annotations

import os
import subprocess
import time
import urllib.parse

import pytest

pytestmark = pytest.mark.e2e

DAG_ID = "celery_two_queues"
DAG = f'''
import os
import socket

import pendulum
from airflow.sdk import dag, task


@dag(dag_id="{DAG_ID}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def celery_two_queues():
    @task(queue="qa")
    def on_qa():
        return {{"hostname": socket.gethostname(), "staging": os.environ.get("METABACKUP_WORKER_STAGING")}}

    @task(queue="qb")
    def on_qb():
        return {{"hostname": socket.gethostname(), "staging": os.environ.get("METABACKUP_WORKER_STAGING")}}

    on_qa()
    on_qb()


celery_two_queues()


@dag(dag_id="celery_sleeper", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False)
def celery_sleeper():
    @task(queue="qa")
    def sleep_on_qa():
        import time

        time.sleep(900)

    sleep_on_qa()


celery_sleeper()
'''


def _own_processes(pids: list[int]) -> list[str]:
    """``ps`` lines of processes in the sessions of ``pids`` (should be none after stop)."""
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if line.split(None, 2)[1] in {str(p) for p in pids}]


def _state(pid: int) -> str | None:
    """The process state letter of ``pid`` (``Z`` for a zombie), None once it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            return stat.read().rsplit(b")", 1)[1].split()[0].decode()
    except FileNotFoundError:
        return None


@pytest.fixture(scope="module")
def celery(tmp_path_factory):
    from harness import airflow_celery

    root = tmp_path_factory.mktemp("celery")
    dags, specs = root / "dags", root / "specs"
    dags.mkdir()
    specs.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG)
    began = time.monotonic()
    instance = airflow_celery.start(root / "airflow", dags, specs, workers={"hostA": ["qa"], "hostB": ["qb"]})
    print(f"\ncelery harness: start-up {time.monotonic() - began:.1f}s")
    api = instance.client()
    for dag_id in (DAG_ID, "celery_sleeper"):
        api.wait_for_dag(dag_id, timeout=300)
    assert api.import_errors() == []
    sessions = [p.pid for p in instance.processes.values()] + [instance.redis.pid]
    yield instance, api
    began = time.monotonic()
    sessions += [p.pid for p in instance.processes.values()]  # restarted workers have new sessions
    pg_dir = instance.postgres.directory
    instance.stop()
    print(f"\ncelery harness: stop {time.monotonic() - began:.1f}s")
    assert _own_processes(sessions) == []
    assert not os.path.exists(pg_dir)


def _run_two_queues(instance, api) -> None:
    began = time.monotonic()
    run_id = api.trigger(DAG_ID)
    result = api.wait(DAG_ID, run_id, timeout=300)
    print(f"\ncelery harness: run {time.monotonic() - began:.1f}s")
    assert result["state"] == "success", result
    quoted = urllib.parse.quote(run_id, safe="")
    tis = {t["task_id"]: t for t in api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances")["task_instances"]}
    assert {k: (v["queue"], v["hostname"]) for k, v in tis.items()} == {"on_qa": ("qa", "hostA"),
                                                                         "on_qb": ("qb", "hostB")}
    for task_id, worker in (("on_qa", "hostA"), ("on_qb", "hostB")):
        xcom = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns/{quoted}/taskInstances/{task_id}/xcomEntries/return_value")
        value = xcom["value"]
        assert value["staging"] == str(instance.staging(worker)), value  # the worker's own environment
        assert value["hostname"] == os.uname().nodename  # one machine: the OS hostname is the same


def test_tasks_run_on_the_worker_of_their_queue(celery):
    _run_two_queues(*celery)


def test_killed_worker_takes_its_task_along_and_starts_again(celery):
    instance, api = celery
    run_id = api.trigger("celery_sleeper")
    quoted = urllib.parse.quote(run_id, safe="")
    deadline = time.monotonic() + 300
    while True:
        ti = api.get(f"/api/v2/dags/celery_sleeper/dagRuns/{quoted}/taskInstances/sleep_on_qa")
        if ti["state"] == "running" and ti.get("pid"):
            break
        assert time.monotonic() < deadline, ti
        time.sleep(1)
    assert ti["hostname"] == "hostA"
    task_pid = ti["pid"]
    assert os.getsid(task_pid) == instance.worker("hostA").pid  # the task process is in the worker's session
    instance.kill_worker("hostA")
    deadline = time.monotonic() + 30  # dead at once; gone once init has reaped the orphan
    while (state := _state(task_pid)) is not None:
        assert state == "Z"  # killed, not yet reaped
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert _own_processes([instance.worker("hostA").pid]) == []
    api._request("PATCH", f"/api/v2/dags/celery_sleeper/dagRuns/{quoted}", {"state": "failed"})
    instance.start_worker("hostA")
    _run_two_queues(instance, api)
