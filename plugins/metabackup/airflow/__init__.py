"""Airflow wrappers: thin operators over ``metabackup.pipeline`` and the spec -> DAG compiler."""
