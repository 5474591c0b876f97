"""Metadata backup & restore for Hadoop-style clusters, compiled into Airflow DAGs.

The core (spec, naming, manifest, catalog, policy, retention, archive, sources, targets,
pipeline) imports nothing from Airflow; ``metabackup.airflow`` wraps it in operators and DAGs.
"""

__version__ = "0.1.0"
