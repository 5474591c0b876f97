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
# The throwaway servers come from the test harness (harness/ at the repository root, not shipped
# with the plugin): `harness slapd start DIR` runs `python -m harness.slapd start DIR`.
harness() { local kind=$1; shift; PYTHONPATH=$REPO/plugins:$REPO "$PY" -m "harness.$kind" "$@"; }
mkdir -p "$REPO/build" "$AIRFLOW_HOME"
: > "$LOG"

# 1. The demo sources: the default task's OMS directories, seeded only where they do not exist.
"$PY" "$REPO/scripts/seed_demo_sources.py" /srv/BigData/om-server/conf /srv/BigData/om-server/workspace

# The demo LdapServer: a seeded slapd on loopback (kept between demo runs, so its chain goes on),
# and the Airflow connection the default task names, as an environment variable.
SLAPD_DIR=$REPO/build/demo-slapd
slapd_json=$(harness slapd start "$SLAPD_DIR" --seed --reuse)
export AIRFLOW_CONN_METABACKUP_LDAPSERVER=$(cat "$SLAPD_DIR/airflow-connection.json")
LDAP_URL=$(printf '%s' "$slapd_json" | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["url"])')
echo "demo LdapServer listening on $LDAP_URL (data in $SLAPD_DIR)"

# The demo's OMS database and DBService: one throwaway PostgreSQL 15 cluster (kept between runs),
# reached through two Airflow connections (each source gets its own replication slot).
PG_DIR=/tmp/metabackup-demo-postgres   # the postgres user must be able to enter it
harness postgres start "$PG_DIR" --reuse >/dev/null
export AIRFLOW_CONN_METABACKUP_OMS_DB=$(cat "$PG_DIR/airflow-connection.json")
export AIRFLOW_CONN_METABACKUP_DBSERVICE=$AIRFLOW_CONN_METABACKUP_OMS_DB
echo "demo PostgreSQL running from $PG_DIR"

# The demo NameNode and the LocalHDFS target: a real HDFS HA pair (NameService hacluster) from the
# Hadoop 3.4 minicluster, recreated each demo run (so its NameNode chain starts with a full).
# Its bin/ holds `hadoop`, which runs the namenode kind's default tool_command.
HDFS_DIR=$REPO/build/demo-hdfs
harness hdfs start "$HDFS_DIR" --ha >/dev/null
export AIRFLOW_CONN_WEBHDFS_HACLUSTER=$(cat "$HDFS_DIR/airflow-connection.json")
export PATH=$HDFS_DIR/bin:$PATH
"$HDFS_DIR/bin/hdfs" dfs -mkdir -p /user/hive/warehouse/demo.db /hbase-demo/data 2>/dev/null
echo "demo HDFS (NameService hacluster) serving WebHDFS at $("$PY" -c "import json; print(json.load(open('$HDFS_DIR/airflow-connection.json'))['host'])")"
# The standby cluster the NameNode sets are copied to (RemoteHDFS): a second HA pair, NameService
# haclusterX, on other ports.
REMOTE_HDFS_DIR=$REPO/build/demo-hdfs-remote
harness hdfs start "$REMOTE_HDFS_DIR" --ha --nameservice haclusterX >/dev/null
export AIRFLOW_CONN_WEBHDFS_HACLUSTERX=$(cat "$REMOTE_HDFS_DIR/airflow-connection.json")
echo "demo standby HDFS (NameService haclusterX) serving WebHDFS at $("$PY" -c "import json; print(json.load(open('$REMOTE_HDFS_DIR/airflow-connection.json'))['host'])")"

# The key the default task's off-cluster copy is encrypted with (kept between demo runs, so the
# chains there stay readable), given to Airflow as the connection the spec names.
KEY_FILE=$REPO/build/demo-backup-kek.key
if [ ! -s "$KEY_FILE" ]; then (umask 077; "$PY" -m metabackup keys generate > "$KEY_FILE"); fi
KEY_CONN=$REPO/build/demo-backup-kek.json
(umask 077; "$PY" -c 'import json,sys; print(json.dumps({"conn_type": "generic", "password": open(sys.argv[1]).read().strip()}))' "$KEY_FILE" > "$KEY_CONN")
export AIRFLOW_CONN_METABACKUP_BACKUP_KEK=$(cat "$KEY_CONN")
echo "demo backup key in $KEY_FILE (0600), as Airflow connection metabackup_backup_kek"

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
"$PY" - <<'PYEOF'
import json, os, ldap
conn = json.loads(os.environ["AIRFLOW_CONN_METABACKUP_LDAPSERVER"])
client = ldap.initialize(f"ldap://{conn['host']}:{conn['port']}")
client.simple_bind_s(conn["login"], conn["password"])
import psycopg
pg = json.load(open("/tmp/metabackup-demo-postgres/instance.json"))
with psycopg.connect(f"host=127.0.0.1 port={pg['port']} user=postgres password={pg['superuser_password']} dbname=postgres", autocommit=True) as db:
    db.execute("CREATE TABLE IF NOT EXISTS hive_tbls (id serial PRIMARY KEY, name text, created timestamptz DEFAULT now())")
    db.execute("INSERT INTO hive_tbls (name) SELECT 'table_' || g FROM generate_series(1, 100) g")
print("inserted 100 rows into the demo database")
dn = "uid=user00001,ou=People,dc=hadoop,dc=com"
client.modify_s(dn, [(ldap.MOD_REPLACE, "description", [f"changed by make demo".encode()])])
print(f"changed {dn} in the demo directory")
PYEOF
"$HDFS_DIR/bin/hdfs" dfs -mkdir -p /user/hive/warehouse/demo.db/new_table 2>/dev/null && echo "created a directory in the demo HDFS"
run_backup "after a configuration change"

echo
echo "== backup sets of task 'default' (catalog read from the manifests at the target)"
"$PY" -m metabackup list --spec include/backup_tasks/default.yaml
echo
echo "Files landed in: $(ls -d /srv/BigData/LocalBackup/default_*) (OMS, DBService, LdapServer, NameNode)"
echo "  NameNode's off-site copy: hdfs://haclusterX$(ls -d /srv/BigData/LocalBackup/default_* | sed 's|/srv/BigData/LocalBackup|/backup/metadata|') (RemoteHDFS):"
"$REMOTE_HDFS_DIR/bin/hdfs" dfs -ls -R /backup/metadata 2>/dev/null | sed 's/^/    /'
echo "Restore the latest NameNode set into a new name directory: PYTHONPATH=plugins .venv/bin/python -m metabackup restore --spec include/backup_tasks/default.yaml --source NameNode --dest /tmp/nn-restore [--from-copy 1]"
echo "  (with --from-copy 1 it reads the standby cluster, where the sets are encrypted: AIRFLOW_CONN_WEBHDFS_HACLUSTERX=\"\$(cat $REMOTE_HDFS_DIR/airflow-connection.json)\" ... --key-file $KEY_FILE)"
echo "The demo HDFS clusters keep running; stop them with: PYTHONPATH=plugins:. .venv/bin/python -m harness.hdfs stop $HDFS_DIR (and $REMOTE_HDFS_DIR)"
echo "Restore the latest OMS set (database + configuration): PYTHONPATH=plugins .venv/bin/python -m metabackup restore --spec include/backup_tasks/default.yaml --source OMS --dest /tmp/oms-restore"
echo "  (for OMS and DBService, --dest must be a new folder the postgres user can enter; add --keep-running to use the recovered server)"
echo "Restore LdapServer into an empty slapd:"
echo "  PYTHONPATH=plugins:. .venv/bin/python -m harness.slapd start /tmp/ldap-restore"
echo "  AIRFLOW_CONN_LDAP_RESTORE=\"\$(cat /tmp/ldap-restore/airflow-connection.json)\" PYTHONPATH=plugins .venv/bin/python -m metabackup restore --spec include/backup_tasks/default.yaml --source LdapServer --dest ldap_restore"
echo "The demo slapd keeps running; stop it with: PYTHONPATH=plugins:. .venv/bin/python -m harness.slapd stop $SLAPD_DIR"
echo "The demo PostgreSQL keeps running; stop it with: PYTHONPATH=plugins:. .venv/bin/python -m harness.postgres stop $PG_DIR"
echo "Open the Airflow UI on it (Browse > Backups is the catalog page):   PATH=$HDFS_DIR/bin:\$PATH AIRFLOW_CONN_WEBHDFS_HACLUSTER=\"\$(cat $HDFS_DIR/airflow-connection.json)\" AIRFLOW_CONN_WEBHDFS_HACLUSTERX=\"\$(cat $REMOTE_HDFS_DIR/airflow-connection.json)\" AIRFLOW_CONN_METABACKUP_LDAPSERVER=\"\$(cat $SLAPD_DIR/airflow-connection.json)\" AIRFLOW_CONN_METABACKUP_OMS_DB=\"\$(cat $PG_DIR/airflow-connection.json)\" AIRFLOW_CONN_METABACKUP_DBSERVICE=\"\$(cat $PG_DIR/airflow-connection.json)\" AIRFLOW_CONN_METABACKUP_BACKUP_KEK=\"\$(cat $KEY_CONN)\" AIRFLOW_HOME=$AIRFLOW_HOME AIRFLOW__CORE__DAGS_FOLDER=$REPO/dags AIRFLOW__CORE__PLUGINS_FOLDER=$REPO/plugins AIRFLOW__CORE__LOAD_EXAMPLES=False PYTHONPATH=$REPO/plugins $AIRFLOW standalone"
echo "                             then http://localhost:8080 (password in $AIRFLOW_HOME/simple_auth_manager_passwords.json.generated)"
