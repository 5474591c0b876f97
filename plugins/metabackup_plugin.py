"""The metabackup Airflow plugin: registers the backup schedule timetable with the scheduler."""

from airflow.plugins_manager import AirflowPlugin

from metabackup.airflow.timetable import PeriodicFromStartTimetable


class MetabackupPlugin(AirflowPlugin):
    name = "metabackup"
    timetables = [PeriodicFromStartTimetable]
