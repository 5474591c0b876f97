"""Backup task "default": compiled from include/backup_tasks/default.yaml."""

from metabackup.airflow.dag_factory import dag_for_dag_file

dag = dag_for_dag_file(__file__)
