"""The metabackup Airflow plugin: the backup schedule timetable, and the "Backups" page.

The page is a FastAPI app (``metabackup.airflow.ui``) mounted at ``/metabackup`` and linked from
the UI's navigation under *Browse*.
"""

from airflow.plugins_manager import AirflowPlugin

from metabackup.airflow.timetable import PeriodicFromStartTimetable


def _backups_app():
    from metabackup.airflow.ui import app

    return app


class MetabackupPlugin(AirflowPlugin):
    name = "metabackup"
    timetables = [PeriodicFromStartTimetable]
    fastapi_apps = [{"app": _backups_app(), "url_prefix": "/metabackup", "name": "metabackup backups"}]
    external_views = [{"name": "Backups", "href": "metabackup/backups", "destination": "nav", "category": "browse",
                       "url_route": "backups"}]
