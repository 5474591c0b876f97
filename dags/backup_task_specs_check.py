"""Fails to import (an import error in the UI) when the task spec folder as a whole is wrong:
a spec without its DAG file, or a task name used twice.  Errors inside one spec show up on that
spec's own DAG file (dags/backup_<name>.py).  Defines no DAG."""

from metabackup.airflow.spec_check import check_spec_folder

check_spec_folder(__file__)
