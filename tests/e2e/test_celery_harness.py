"""The CeleryExecutor harness (issue 16): Redis, PostgreSQL, the API server, scheduler, DAG
processor and two Celery workers on two queues; each task runs on the worker of its queue."""

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
'''


def _own_processes(pids: list[int]) -> list[str]:
    """``ps`` lines of processes in the sessions of ``pids`` (should be none after stop)."""
    out = subprocess.run(["ps", "-eo", "pid,sid,args"], capture_output=True, text=True).stdout.splitlines()[1:]
    return [line for line in out if line.split(None, 2)[1] in {str(p) for p in pids}]


def test_tasks_run_on_the_worker_of_their_queue(tmp_path):
    from harness import airflow_celery

    dags, specs = tmp_path / "dags", tmp_path / "specs"
    dags.mkdir()
    specs.mkdir()
    (dags / f"{DAG_ID}.py").write_text(DAG)
    began = time.monotonic()
    instance = airflow_celery.start(tmp_path / "airflow", dags, specs, workers={"hostA": ["qa"], "hostB": ["qb"]})
    started = time.monotonic() - began
    pids = [p.pid for p in instance.processes.values()]
    redis_pid, pg_dir = instance.redis.pid, instance.postgres.directory
    try:
        api = instance.client()
        api.wait_for_dag(DAG_ID, timeout=300)
        assert api.import_errors() == []
        run_began = time.monotonic()
        run_id = api.trigger(DAG_ID)
        result = api.wait(DAG_ID, run_id, timeout=300)
        ran = time.monotonic() - run_began
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
        print(f"\ncelery harness: start-up {started:.1f}s, run {ran:.1f}s")
    finally:
        instance.stop()
    assert _own_processes(pids + [redis_pid]) == []
    assert not os.path.exists(pg_dir)
