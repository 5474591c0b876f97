"""Backups and restores of every source kind through a running Airflow, its REST API and its UI."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tempfile
import urllib.request
from pathlib import Path

import psycopg
import pytest

REPO = Path(__file__).resolve().parents[2]
from hdfs_helpers import WebHdfs
from metabackup.connections import ConnectionInfo
from metabackup.sources.files import iter_tree
from metabackup.sources.ldap.restore import dump_state

pytestmark = pytest.mark.e2e

TASK_DIR = "e2eman_20261124100000"
SET_NAME = re.compile(r"^3\.1\.0_(OMS|LdapServer|DBService|NameNode)_\d{14}\.(tar\.gz|manifest\.json)$")
ARTIFACTS = REPO / "test-artifacts" / "e2e"


def ldap_conn(instance) -> ConnectionInfo:
    return ConnectionInfo("x", "ldap", "127.0.0.1", instance.port, instance.admin_dn, instance.password)


def run_ok(client, dag_id: str, conf: dict | None = None, timeout: float = 300) -> dict:
    run_id = client.trigger(dag_id, conf)
    outcome = client.wait(dag_id, run_id, timeout)
    assert outcome["state"] == "success", json.dumps(outcome, indent=1)[-6000:]
    return outcome


@pytest.fixture(scope="module")
def backed_up(client, project, servers):
    """A full and then an incremental run of the manual task, with changes in every source between."""
    first = run_ok(client, "backup_e2eman")
    (project["conf"] / "oms.conf").write_text("role=standby\n")
    subprocess.run(["ldapmodify", "-x", "-H", servers["ldap_src"].url, "-D", servers["ldap_src"].admin_dn,
                    "-w", servers["ldap_src"].password], check=True, capture_output=True, text=True,
                   input="dn: uid=user00001,ou=People,dc=hadoop,dc=com\nchangetype: modify\nreplace: loginShell\nloginShell: /bin/zsh\n")
    with psycopg.connect(servers["pg"].superuser_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e (id int)")
        conn.execute("INSERT INTO e2e SELECT generate_series(1, 500)")
    WebHdfs(servers["hdfs"].webhdfs_url()).mkdirs("/e2e/changed")
    second = run_ok(client, "backup_e2eman")
    return {"first": first, "second": second, "tree": dict(iter_tree(project["conf"])),
            "ldap": dump_state(ldap_conn(servers["ldap_src"]), ["dc=hadoop,dc=com"]),
            "hdfs": WebHdfs(servers["hdfs"].webhdfs_url()).tree("/", skip=("/backup",))}


def test_a_manual_task_backs_up_every_source_through_the_rest_api(backed_up, project, servers):
    for outcome, chosen in ((backed_up["first"], "full"), (backed_up["second"], "incremental")):
        for source in ("OMS", "LdapServer", "DBService", "NameNode"):
            assert outcome["tasks"][f"{source}.{chosen}"] == "success"
            assert outcome["tasks"][f"{source}.verify"] == "success"
        assert outcome["tasks"]["NameNode.replicate_1"] == "success"
    local = project["data"] / "LocalBackup" / TASK_DIR
    names = sorted(p.name for p in local.iterdir() if not p.name.startswith("."))
    assert all(SET_NAME.match(n) for n in names), names
    assert sum(n.endswith(".manifest.json") for n in names) == 8  # OMS, LdapServer, DBService, NameNode x 2
    types = sorted(json.loads((local / n).read_text())["type"] for n in names if n.endswith(".manifest.json"))
    assert types == ["full"] * 4 + ["incremental"] * 4
    # NameNode's off-site copy, in the standby cluster's HDFS (RemoteHDFS haclusterX)
    on_standby = WebHdfs(servers["hdfs_standby"].webhdfs_url()).names(f"/backup/metadata/{TASK_DIR}")
    assert len(on_standby) == 4 and all(SET_NAME.match(n) and "_NameNode_" in n for n in on_standby), on_standby


def test_back_up_now_runs_a_periodic_task_before_its_first_scheduled_time(client, project):
    outcome = run_ok(client, "backup_e2eper")
    assert outcome["tasks"]["OMS.full"] == "success"
    sets = list((project["data"] / "LocalBackup" / "e2eper_20261124020000").glob("3.1.0_OMS_*.tar.gz"))
    assert len(sets) == 1


def test_restore_of_the_manager_oms_kind_database_and_directories(client, project):
    if not list((project["data"] / "LocalBackup" / "e2eper_20261124020000").glob("3.1.0_OMS_*.tar.gz")):
        run_ok(client, "backup_e2eper")
    dest_root = Path(tempfile.mkdtemp(prefix="metabackup-e2e-oms-"))
    dest_root.chmod(0o755)
    try:
        outcome = run_ok(client, "restore_e2eper", {"source": "OMS", "destination": str(dest_root / "oms"),
                                                    "dry_run": False})
        assert outcome["tasks"]["OMS.validate"] == "success"
        assert (dest_root / "oms" / "database" / "PG_VERSION").exists()
        restored = dest_root / "oms" / "files" / str(project["conf"]).lstrip("/")
        assert sorted(p.name for p in restored.iterdir()) == sorted(p.name for p in project["conf"].iterdir())
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)


def test_restore_each_source_kind_through_the_restore_dag(client, backed_up, project, servers):
    dest_root = Path(tempfile.mkdtemp(prefix="metabackup-e2e-restore-"))
    dest_root.chmod(0o755)
    try:
        # files
        run_ok(client, "restore_e2eman", {"source": "OMS", "destination": str(dest_root / "oms"), "dry_run": False})
        assert dict(iter_tree(dest_root / "oms" / str(project["conf"]).lstrip("/"))) == backed_up["tree"]
        # ldap, into the empty server's connection
        outcome = run_ok(client, "restore_e2eman", {"source": "LdapServer", "destination": "e2e_ldap_empty",
                                                    "dry_run": False})
        assert outcome["tasks"]["LdapServer.validate"] == "success"
        restored = dump_state(ldap_conn(servers["ldap_empty"]), ["dc=hadoop,dc=com"])
        assert set(restored) == set(backed_up["ldap"])
        # postgres, into a new data directory
        outcome = run_ok(client, "restore_e2eman", {"source": "DBService", "destination": str(dest_root / "pg"),
                                                    "dry_run": False})
        assert outcome["tasks"]["DBService.validate"] == "success" and (dest_root / "pg" / "PG_VERSION").exists()
        # namenode, into a new name directory that a fresh NameNode then serves
        run_ok(client, "restore_e2eman", {"source": "NameNode", "destination": str(dest_root / "nn"), "dry_run": False})
        from harness import hdfs

        namenode = hdfs.start_namenode_on(dest_root / "nn", dest_root / "nn-check")
        try:
            restored_tree = WebHdfs(namenode.webhdfs_url()).tree("/", skip=("/backup",))
        finally:
            namenode.stop()
        assert restored_tree == backed_up["hdfs"]
    finally:
        shutil.rmtree(dest_root, ignore_errors=True)


def test_the_backups_page_lists_the_sets(airflow, client, backed_up):
    request = urllib.request.Request(f"{airflow.url}/metabackup/api/backups",
                                     headers={"Authorization": f"Bearer {client.token}"})
    with urllib.request.urlopen(request) as response:
        data = json.loads(response.read())
    task = next(t for t in data["tasks"] if t["name"] == "e2eman")
    by_source = {s["source"]: s for s in task["sources"]}
    assert set(by_source) == {"OMS", "LdapServer", "DBService", "NameNode"}
    for source in by_source.values():
        assert source["error"] is None
        assert [s["type"] for s in source["sets"]][:2] == ["incremental", "full"]  # newest first
        assert source["sets"][0]["restorable"] and source["sets"][0]["chain_length"] == 2
    assert by_source["NameNode"]["target"].startswith("file://")
    (copy,) = by_source["NameNode"]["copies"]
    assert copy["target"] == f"hdfs://haclusterX/backup/metadata/{TASK_DIR}" and copy["sets"] == 2, copy
    with pytest.raises(urllib.error.HTTPError) as denied:
        urllib.request.urlopen(f"{airflow.url}/metabackup/backups")
    assert denied.value.code in (401, 403)


def test_lineage_reaches_openlineage_and_the_asset_views(client, backed_up, project):
    events = [json.loads(line) for line in (project["root"] / "openlineage.jsonl").read_text().splitlines() if line.strip()]
    verify = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "backup_e2eman.OMS.verify"]
    assert verify, sorted({e["job"]["name"] for e in events})
    outputs = {(d["namespace"], d["name"]) for d in verify[-1]["outputs"]}
    inputs = {(d["namespace"], d["name"]) for d in verify[-1]["inputs"]}
    assert any(name.endswith(f"LocalBackup/{TASK_DIR}") for _, name in outputs), outputs
    assert any(name == str(project["conf"]) for _, name in inputs), inputs
    assets = client.get("/api/v2/assets?limit=100")["assets"]
    uris = {a["uri"] for a in assets}
    assert f"hdfs://haclusterX/backup/metadata/{TASK_DIR}" in uris  # the NameNode copy's location asset
    events = client.get("/api/v2/assets/events?limit=100")["asset_events"]
    assert any(e["extra"].get("type") == "incremental" and e["extra"].get("source") == "DBService" for e in events)


@pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                    reason="Debian chromium/chromium-driver are not installed (make setup installs them)")
def test_browser_opens_the_trigger_form_and_the_backups_page(airflow, client, backed_up):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    wait = WebDriverWait(driver, 60)
    try:
        driver.get(f"{airflow.url}/auth/login")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
        driver.find_element(By.NAME, "password").send_keys(json.loads((airflow.home / "passwords.json").read_text())["admin"])
        driver.find_element(By.XPATH, "//button[@type='submit']").click()
        wait.until(lambda d: any(c["name"] == "_token" for c in d.get_cookies()))

        driver.get(f"{airflow.url}/dags/backup_e2eman")
        trigger = wait.until(ec.element_to_be_clickable((By.XPATH, "//button[contains(., 'Trigger')]")))
        trigger.click()
        wait.until(ec.presence_of_element_located((By.XPATH, "//*[contains(text(), 'Force a full backup')]")))
        driver.save_screenshot(str(ARTIFACTS / "trigger-form.png"))

        driver.get(f"{airflow.url}/metabackup/backups")
        wait.until(ec.presence_of_element_located((By.ID, "task-e2eman")))
        text = driver.find_element(By.TAG_NAME, "body").text
        driver.save_screenshot(str(ARTIFACTS / "backups-page.png"))
        newest = client.get("/api/v2/dags/backup_e2eman/dagRuns?limit=1&order_by=-run_after")["dag_runs"]
        assert newest
        assert "e2eman" in text and "Back up now" in text and "Restore" in text
        assert re.search(r"3\.1\.0_DBService_\d{14}", text) and "incremental" in text
        # "Back up now" from the page triggers a run as the logged-in user
        before = client.get("/api/v2/dags/backup_e2eper/dagRuns")["total_entries"]
        driver.find_element(By.CSS_SELECTOR, "#task-e2eper button.act").click()
        wait.until(ec.text_to_be_present_in_element((By.ID, "message"), "Triggered"))
        assert client.get("/api/v2/dags/backup_e2eper/dagRuns")["total_entries"] == before + 1
    finally:
        driver.quit()
