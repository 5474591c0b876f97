"""Key rotation for every task spec's encrypted sets: triggered by hand with the new key's id."""

from pathlib import Path

from metabackup.airflow.dag_factory import spec_dir_for
from metabackup.airflow.keys_dag import build_rotate_keys_dag

dag = build_rotate_keys_dag(spec_dir_for(Path(__file__).parent), __file__)
