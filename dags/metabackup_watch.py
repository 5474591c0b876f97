"""The recovery point watch over every task spec: an alarm when a source's newest set is stale."""

from pathlib import Path

from metabackup.airflow.dag_factory import spec_dir_for
from metabackup.airflow.watch_dag import build_watch_dag

dag = build_watch_dag(spec_dir_for(Path(__file__).parent), __file__)
