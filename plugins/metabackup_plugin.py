"""The metabackup Airflow plugin: the backup schedule timetable, the "Backups" page, and the
pools of the backup and restore DAGs (created when missing, in the API server and the scheduler).

The page is a FastAPI app (``metabackup.airflow.ui``) mounted at ``/metabackup`` and linked from
the UI's navigation under *Browse*.
"""

from airflow.plugins_manager import AirflowPlugin

from metabackup.airflow.timetable import PeriodicFromStartTimetable


def _backups_app():
    from metabackup.airflow.ui import app

    return app


class MetabackupPlugin(AirflowPlugin):
    """Also creates the pools the DAGs draw from when missing (:mod:`metabackup.airflow.pools`)."""

    name = "metabackup"
    timetables = [PeriodicFromStartTimetable]
    fastapi_apps = [{"app": _backups_app(), "url_prefix": "/metabackup", "name": "metabackup backups"}]
    external_views = [{"name": "Backups", "href": "metabackup/backups", "destination": "nav", "category": "browse",
                       "url_route": "backups"}]

    @classmethod
    def on_load(cls, *args, **kwargs):
        from metabackup.airflow.pools import ensure_pools_at_load

        ensure_pools_at_load()
