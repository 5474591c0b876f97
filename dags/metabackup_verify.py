"""The verification DAG over every task spec: checksums of every set, and a test restore."""

from pathlib import Path

from metabackup.airflow.dag_factory import spec_dir_for
from metabackup.airflow.verify_dag import build_verify_dag

dag = build_verify_dag(spec_dir_for(Path(__file__).parent), __file__)
