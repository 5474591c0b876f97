"""Backup task "default": its backup and restore DAGs, compiled from include/backup_tasks/default.yaml."""

from metabackup.airflow.dag_factory import dags_for_dag_file

backup_dag, restore_dag = dags_for_dag_file(__file__)
