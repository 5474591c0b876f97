#!/usr/bin/env bash
# `make demo`: back up the demo cluster manager configuration with the shipped "default" task,
# through Airflow (a full, then an incremental after a change), and print where the files landed.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
export AIRFLOW_HOME=${AIRFLOW_HOME:-$REPO/build/airflow-home}
export AIRFLOW__CORE__DAGS_FOLDER=$REPO/dags
export AIRFLOW__CORE__PLUGINS_FOLDER=$REPO/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export PYTHONPATH=$REPO/plugins
PY=$REPO/.venv/bin/python
AIRFLOW=$REPO/.venv/bin/airflow
LOG=$REPO/build/demo.log
mkdir -p "$REPO/build" "$AIRFLOW_HOME"
: > "$LOG"

# 1. The demo sources: the default task's OMS directories, seeded only where they do not exist.
"$PY" "$REPO/scripts/seed_demo_sources.py" /srv/BigData/om-server/conf /srv/BigData/om-server/workspace

# 2. Airflow's database, then the spec folder check (any bad spec is an error here too).
"$AIRFLOW" db migrate >>"$LOG" 2>&1
"$PY" -m metabackup validate

run_backup() {
  echo "== airflow dags test backup_default ($1)"
  if ! "$AIRFLOW" dags test backup_default >>"$LOG" 2>&1 || ! grep -q "Marking run .* successful" "$LOG"; then
    echo "the backup run failed; see $LOG" >&2
    tail -n 40 "$LOG" >&2
    exit 1
  fi
  sleep 1  # set names carry the execution time to the second
}
run_backup "first run"
echo "# changed by make demo at $(date -u +%FT%TZ)" >> /srv/BigData/om-server/conf/oms-server.properties
run_backup "after a configuration change"

echo
echo "== backup sets of task 'default' (catalog read from the manifests at the target)"
"$PY" -m metabackup list --spec include/backup_tasks/default.yaml
echo
echo "Files landed in: $(ls -d /srv/BigData/LocalBackup/default_*)"
echo "Restore the latest OMS set:  PYTHONPATH=plugins .venv/bin/python -m metabackup restore --spec include/backup_tasks/default.yaml --source OMS --dest /tmp/oms-restore"
echo "Open the Airflow UI on it:   AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER=$REPO/dags AIRFLOW__CORE__PLUGINS_FOLDER=$REPO/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONPATH=$REPO/plugins $AIRFLOW standalone"
echo "                             then http://localhost:8080 (password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
