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

TASK_DIR = "default_20261124100000"
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
    first = run_ok(client, "backup_default")
    (project["conf"] / "oms.conf").write_text("role=standby\n")
    subprocess.run(["ldapmodify", "-x", "-H", servers["ldap_src"].url, "-D", servers["ldap_src"].admin_dn,
                    "-w", servers["ldap_src"].password], check=True, capture_output=True, text=True,
                   input="dn: uid=user00001,ou=People,dc=hadoop,dc=com\nchangetype: modify\nreplace: loginShell\nloginShell: /bin/zsh\n")
    with psycopg.connect(servers["pg"].superuser_dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS e2e (id int)")
        conn.execute("INSERT INTO e2e SELECT generate_series(1, 500)")
    WebHdfs(servers["hdfs"].webhdfs_url()).mkdirs("/e2e/changed")
    second = run_ok(client, "backup_default")
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
        run_ok(client, "restore_default", {"source": "OMS", "destination": str(dest_root / "oms"), "dry_run": False})
        assert dict(iter_tree(dest_root / "oms" / str(project["conf"]).lstrip("/"))) == backed_up["tree"]
        # ldap, into the empty server's connection
        outcome = run_ok(client, "restore_default", {"source": "LdapServer", "destination": "e2e_ldap_empty",
                                                    "dry_run": False})
        assert outcome["tasks"]["LdapServer.validate"] == "success"
        restored = dump_state(ldap_conn(servers["ldap_empty"]), ["dc=hadoop,dc=com"])
        assert set(restored) == set(backed_up["ldap"])
        # postgres, into a new data directory
        outcome = run_ok(client, "restore_default", {"source": "DBService", "destination": str(dest_root / "pg"),
                                                    "dry_run": False})
        assert outcome["tasks"]["DBService.validate"] == "success" and (dest_root / "pg" / "PG_VERSION").exists()
        # namenode, into a new name directory that a fresh NameNode then serves
        run_ok(client, "restore_default", {"source": "NameNode", "destination": str(dest_root / "nn"), "dry_run": False})
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
    task = next(t for t in data["tasks"] if t["name"] == "default")
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
    verify = [e for e in events if e.get("eventType") == "COMPLETE" and e["job"]["name"] == "backup_default.OMS.verify"]
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



# ---------------------------------------------------------------------------------------------
# The Backups page and the forms in a real browser (Debian's Chromium, headless)
# ---------------------------------------------------------------------------------------------
needs_chromium = pytest.mark.skipif(shutil.which("chromium") is None or shutil.which("chromedriver") is None,
                                    reason="Debian chromium/chromium-driver are not installed (make setup installs them)")


class Browser:
    """One headless Chromium session logged in to Airflow's UI."""

    def __init__(self, airflow, user: str = "admin"):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.support.ui import WebDriverWait

        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium")
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        self.url = airflow.url
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.wait = WebDriverWait(self.driver, 60)
        self.login(user, json.loads((airflow.home / "passwords.json").read_text())[user])

    def login(self, user: str, password: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.driver.get(f"{self.url}/auth/login")
        self.wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys(user)
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.driver.find_element(By.XPATH, "//button[@type='submit']").click()
        self.wait.until(lambda d: any(c["name"] == "_token" for c in d.get_cookies()))

    def find(self, css: str, timeout: float | None = None):
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        return WebDriverWait(self.driver, timeout or 60).until(ec.presence_of_element_located((By.CSS_SELECTOR, css)))

    def all(self, css: str) -> list:
        from selenium.webdriver.common.by import By

        return self.driver.find_elements(By.CSS_SELECTOR, css)

    def open_backups_from_the_navigation(self) -> None:
        """Home, then Airflow's own *Browse* menu, then *Backups*; the page's frame entered."""
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec

        self.driver.switch_to.default_content()
        self.driver.get(f"{self.url}/")
        self.wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//button[.//*[normalize-space(text())='Browse'] or normalize-space(.)='Browse']"))).click()
        self.wait.until(ec.element_to_be_clickable(
            (By.XPATH, "//a[@role='menuitem'][normalize-space(.)='Backups']"))).click()
        frame = self.wait.until(ec.presence_of_element_located((By.TAG_NAME, "iframe")))
        # Airflow's route for the view (it may append the frame's own path)
        assert self.driver.current_url.startswith(f"{self.url}/plugin/backups"), self.driver.current_url
        self.driver.switch_to.frame(frame)
        self.find("section.task")

    def screenshot(self, name: str) -> None:
        """The whole window (Airflow's layout with the page in it)."""
        self.driver.switch_to.default_content()
        self.driver.save_screenshot(str(ARTIFACTS / name))

    def quit(self) -> None:
        self.driver.quit()


@pytest.fixture(scope="module")
def browser(airflow, client):
    if shutil.which("chromium") is None or shutil.which("chromedriver") is None:
        pytest.skip("Debian chromium/chromium-driver are not installed (make setup installs them)")
    session = Browser(airflow)
    yield session
    session.quit()


def newest_run(client, dag_id: str, state: str, timeout: float = 240) -> dict:
    """The DAG's newest run once it is in ``state``."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = client.get(f"/api/v2/dags/{dag_id}/dagRuns?limit=1&order_by=-run_after")["dag_runs"]
        if runs and runs[0]["state"] == state:
            return runs[0]
        time.sleep(2)
    raise AssertionError(f"{dag_id}: no {state} newest run within {timeout}s: {runs}")


@needs_chromium
def test_the_page_opens_inside_airflow_with_every_rpo_state_and_the_failed_runs(browser, client, backed_up, project):
    from selenium.webdriver.common.by import By

    # the late and stale tasks' scheduled runs (made at start) fail: their source folders are gone
    failed = {name: newest_run(client, f"backup_{name}", "failed") for name in ("e2erpo_late", "e2erpo_stale")}
    assert all(run["run_type"] == "scheduled" for run in failed.values())
    newest_run(client, "backup_e2erpo_ok", "success")
    browser.open_backups_from_the_navigation()
    states = {s.get_attribute("id"): s.get_attribute("data-rpo") for s in browser.all("section.task")}
    assert states["task-e2erpo_ok"] == "ok" and states["task-e2erpo_late"] == "late"
    assert states["task-e2erpo_stale"] == "stale" and states["task-default"] == "manual", states
    for state in ("ok", "late", "stale", "manual"):
        assert browser.all(f"#summary .rpo-{state}"), state
    assert browser.find("#failed-count").text.startswith("2 last run failed")
    for name, run in failed.items():
        badge = browser.find(f"#task-{name} .runs .state")
        assert badge.get_attribute("data-state") == "failed"
        link = browser.find(f"#task-{name} .runs a")
        assert link.text == run["dag_run_id"] and f"/dags/backup_{name}/runs/" in link.get_attribute("href")
        assert "failed at OMS.check" in browser.find(f"#task-{name} .runs").text
        # the scheduled run's record raised ALM-12034 (kept in a Variable): the page shows it active
        alarm = browser.find(f"#source-{name}-OMS .alarm[data-alarm='ALM-12034']")
        # (its step: OMS.check, or preflight when the check's process died before it ran, as runs
        # started while Airflow's API server was still coming up do)
        assert "Periodic backup failure: active since" in alarm.text and re.search(r"step (OMS\.check|preflight)", alarm.text)
    late_text = browser.find("#source-e2erpo_late-OMS .rpo-text").text
    assert "late after 5 h, stale after 8 h" in late_text, late_text
    # per source: where the sets are, usage and free space, lineage links to Airflow's asset view
    nn = browser.find("#source-default-NameNode")
    assert "on-cluster" in nn.text and "unencrypted" in nn.text and "used" in nn.text and "free" in nn.text
    assets = [a.get_attribute("href") for a in nn.find_elements(By.CSS_SELECTOR, "a.asset")]
    assert len(assets) >= 3 and all("/assets/" in href for href in assets), assets  # source, primary, copy 1
    browser.driver.execute_script("window.scrollTo(0, 0)")
    browser.screenshot("backups-page.png")
    # Airflow's navigation is around the page
    top = browser.driver.find_element(By.TAG_NAME, "body").text
    assert "Browse" in top and "Admin" in top and "Dags" in top


@needs_chromium
def test_the_charts_and_the_chain_diagram_show_every_kept_set(browser, client, backed_up, airflow):
    request = urllib.request.Request(f"{airflow.url}/metabackup/api/backups",
                                     headers={"Authorization": f"Bearer {client.token}"})
    with urllib.request.urlopen(request) as response:
        data = json.loads(response.read())
    oms = next(s for t in data["tasks"] if t["name"] == "default" for s in t["sources"] if s["source"] == "OMS")
    kinds = [s["type"] for s in oms["sets"]]
    browser.open_backups_from_the_navigation()
    chart = browser.find("#source-default-OMS svg.size-chart")
    assert len(chart.find_elements("css selector", "rect.bar.full")) == kinds.count("full")
    assert len(chart.find_elements("css selector", "rect.bar.incremental")) == kinds.count("incremental")
    assert len(browser.all("#source-default-OMS svg.duration-chart rect.bar")) == len(kinds)
    chart.screenshot(str(ARTIFACTS / "chart-set-size.png"))
    diagram = browser.find("#source-default-OMS svg.chain-diagram")
    assert len(diagram.find_elements("css selector", "g.set.full")) == kinds.count("full")
    assert len(diagram.find_elements("css selector", "g.set.incremental")) == kinds.count("incremental")
    assert len(diagram.find_elements("css selector", "line.link")) == kinds.count("incremental")
    diagram.screenshot(str(ARTIFACTS / "chain-diagram.png"))
    # Airflow's dark theme reaches the page
    browser.driver.switch_to.default_content()
    browser.driver.execute_script("localStorage.setItem('theme', 'dark')")
    try:
        browser.open_backups_from_the_navigation()
        assert "dark" in browser.driver.execute_script("return document.documentElement.className")
        background = browser.driver.execute_script("return getComputedStyle(document.body).backgroundColor")
        assert background == "rgb(17, 24, 39)", background
        browser.screenshot("backups-page-dark.png")
    finally:
        browser.driver.switch_to.default_content()
        browser.driver.execute_script("localStorage.setItem('theme', 'light')")


@needs_chromium
def test_a_running_backup_shows_its_step_and_progress(browser, client, project):
    import time

    run_id = client.trigger("backup_e2eslow")
    marker = project["markers"] / "backup_e2eslow:OMS.upload.after.paused"
    deadline = time.monotonic() + 180
    while not marker.exists():
        assert time.monotonic() < deadline, "the e2eslow run did not reach its pause after the upload"
        time.sleep(1)
    browser.open_backups_from_the_navigation()
    row = browser.find("#task-e2eslow p.progress")
    assert "OMS.upload" in row.text and "OMS: upload: done" in row.text, row.text
    assert browser.find("#task-e2eslow .runs .state").get_attribute("data-state") == "running"
    browser.find("#task-e2eslow").screenshot(str(ARTIFACTS / "running-progress.png"))
    assert client.wait("backup_e2eslow", run_id, timeout=240)["state"] == "success"


@needs_chromium
def test_the_actions_start_runs_and_link_them(browser, client, backed_up, project):
    import time

    from selenium.webdriver.support import expected_conditions as ec

    browser.open_backups_from_the_navigation()
    # Back up now, forced full
    before = client.get("/api/v2/dags/backup_e2eper/dagRuns")["total_entries"]
    browser.find("#task-e2eper input.force-full").click()
    browser.find("#task-e2eper button.backup").click()
    browser.wait.until(ec.text_to_be_present_in_element(("id", "message"), "Triggered"))
    link = browser.find("#message a")
    runs = client.get("/api/v2/dags/backup_e2eper/dagRuns?order_by=-run_after")
    assert runs["total_entries"] == before + 1
    assert runs["dag_runs"][0]["conf"] == {"force_full": True}
    assert link.text == runs["dag_runs"][0]["dag_run_id"] and "/dags/backup_e2eper/runs/" in link.get_attribute("href")
    # Verify now: the verification DAG for that task only
    browser.find("#task-e2eper button.verify").click()
    browser.wait.until(ec.text_to_be_present_in_element(("id", "message"), "metabackup_verify"))
    verify_run = browser.find("#message a").text
    quoted = urllib.parse.quote(verify_run, safe="")
    assert client.get(f"/api/v2/dags/metabackup_verify/dagRuns/{quoted}")["conf"] == {"task": "e2eper"}
    deadline = time.monotonic() + 240
    while True:
        tis = client.get(f"/api/v2/dags/metabackup_verify/dagRuns/{quoted}/taskInstances?limit=100")["task_instances"]
        others = [t for t in tis if not t["task_id"].startswith("e2eper.")]
        if others and all(t["state"] == "skipped" for t in others):
            break
        assert time.monotonic() < deadline, [(t["task_id"], t["state"]) for t in tis]
        time.sleep(2)
    # Restore…: the form comes pre-filled, dry run ticked
    browser.driver.execute_script("document.querySelectorAll('#source-default-OMS details.sets').forEach(d => d.open = true)")
    browser.find("#source-default-OMS button.restore").click()
    assert browser.find("#rf-dry").is_selected()
    assert "OMS 3.1.0_OMS_" in browser.find("#rf-set").text
    browser.find("#rf-dest").send_keys(str(project["root"] / "restore-from-page"))
    browser.find("#restore-form button[type=submit]").click()
    browser.wait.until(ec.text_to_be_present_in_element(("id", "message"), "restore_default"))
    restore_run = browser.find("#message a").text
    outcome = client.wait("restore_default", restore_run, timeout=240)
    assert outcome["state"] == "success", outcome
    assert not (project["root"] / "restore-from-page").exists()  # a dry run writes nothing
    client.wait("metabackup_verify", verify_run, timeout=300)  # not left running into the next tests


@needs_chromium
def test_the_trigger_form_offers_the_sources_as_a_multi_select(browser):
    from selenium.webdriver.common.by import By

    browser.driver.switch_to.default_content()
    browser.driver.get(f"{browser.url}/dags/backup_default")
    browser.wait.until(lambda d: d.find_elements(By.XPATH, "//button[contains(., 'Trigger')]"))
    browser.driver.find_element(By.XPATH, "//button[contains(., 'Trigger')]").click()
    def shown(xpath):
        return [e for e in browser.driver.find_elements(By.XPATH, xpath) if e.is_displayed()]

    browser.wait.until(lambda d: shown("//*[contains(text(), 'Back up only these sources')]"))
    assert shown("//*[contains(text(), 'Take a full backup of every selected source')]")
    # the Sources field: the nearest block around its description that holds a chosen source's chip
    (field,) = shown("//*[contains(text(), 'Back up only these sources')]"
                     "/ancestor::*[.//*[normalize-space(text())='OMS']][1]")
    chips = [c.text for c in field.find_elements(By.XPATH, ".//span[normalize-space(text())]")]
    assert sorted(c for c in chips if not c.startswith("Back up")) == ["DBService", "LdapServer", "NameNode", "OMS"], chips
    browser.screenshot("trigger-form-sources.png")


@needs_chromium
def test_the_page_links_to_the_asset_graph_of_the_default_task(browser, backed_up, project):
    from selenium.webdriver.common.by import By

    browser.open_backups_from_the_navigation()
    primary = next(a for a in browser.all("#source-default-OMS a.asset") if a.text == "primary")
    href = primary.get_attribute("href")
    browser.driver.switch_to.default_content()
    browser.driver.get(href)
    browser.wait.until(lambda d: d.find_elements(By.XPATH, "//button[normalize-space(.)='Task Dependencies']"))
    browser.driver.find_element(By.XPATH, "//button[normalize-space(.)='Task Dependencies']").click()
    browser.wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, ".react-flow__controls-fitview"))
    import time

    time.sleep(2)  # the graph's layout settles; then the whole graph in view (nodes outside are not drawn)
    browser.driver.find_element(By.CSS_SELECTOR, ".react-flow__controls-fitview").click()
    browser.wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, ".react-flow__node")) >= 3)
    time.sleep(2)
    nodes = [n.text for n in browser.all(".react-flow__node")]
    assert any(f"LocalBackup/{TASK_DIR}" in n for n in nodes), nodes  # the location
    assert any(n == str(project["conf"]) or n.endswith(str(project["conf"])) for n in nodes), nodes  # the source
    assert any("OMS.verify" in n and "backup_default" in n for n in nodes), nodes  # the task between them
    browser.screenshot("asset-graph.png")


def test_a_viewer_sees_the_page_without_actions_and_cannot_trigger(airflow, client):
    from harness.airflow_standalone import AirflowClient, AirflowError

    viewer = AirflowClient(airflow.url, "viewer", json.loads((airflow.home / "passwords.json").read_text())["viewer"])
    request = urllib.request.Request(f"{airflow.url}/metabackup/backups", headers={"Authorization": f"Bearer {viewer.token}"})
    with urllib.request.urlopen(request) as response:
        page = response.read().decode()
    assert 'id="task-default"' in page and "read-only: you may not trigger runs of this task" in page
    assert '<button class="act' not in page and '<button class="restore"' not in page
    with pytest.raises(AirflowError, match="HTTP 403"):
        viewer.trigger("backup_default")
    for path in ("/metabackup/backups", "/metabackup/api/backups"):
        with pytest.raises(urllib.error.HTTPError) as denied:
            urllib.request.urlopen(f"{airflow.url}{path}")
        assert denied.value.code in (401, 403)
