"""The "Backups" page (``/metabackup/backups``) with N backup tasks of S committed sets per source,
against Airflow's own DAG list page (``/dags``) of the same deployment, in one headless-browser session.

1. Generates ``--tasks`` (100) specs ``<specs>/ui_NNN.yaml`` — manual (every third one periodic,
   starting in 2030, so nothing is scheduled), policy ``full_then_incremental``, one ``files`` source
   (``OMS``; every second task also ``LdapServer``, kind ``files`` too) of 3 small files, LocalDir
   targets with ``max_backups`` = max(S, 50) — and their DAG files ``backup_ui_NNN.py`` (copies of
   ``dags/backup_default.py``: DAGs ``backup_ui_NNN`` and ``restore_ui_NNN``).
2. Commits ``--sets`` (50) real sets per source through the core: ``metabackup.pipeline.backup(spec,
   executed=...)`` once per hour of executed time, a line of one source file changed before each
   (full, then incrementals: one chain per source).  A set cannot be copied to another task: its
   manifest names the task and the task directory, and the catalog refuses it elsewhere
   (``manifest.check_belongs``), so every task's sets are made for it, by a process pool
   (``--jobs``, default the cores) of one task per job.
3. Starts ``airflow standalone`` (``harness.airflow_standalone``) on the DAG and spec folders; waits
   until all 2N DAGs are listed by ``GET /api/v2/dags`` with no import error.
4. One headless Chromium (selenium) logs in (``/auth/login``, the ``_token`` cookie), warms up once
   on each page (not counted), then alternates ``--repeat`` (5) times: (a) ``/dags``, (b)
   ``/metabackup/backups``.  Before each load a script is registered to run at the start of the new
   document (CDP ``Page.addScriptToEvaluateOnNewDocument``); it checks a condition on every DOM
   mutation and every 5 ms and records ``performance.now()`` (ms since the navigation started) the
   first time it holds:

   * DAG list: the number of distinct links to ``/dags/<id>`` for ids of this deployment equals the
     rows of one page (measured once before: the first load is watched until the count has not
     changed for 3 s — Airflow's page size, or all 2N if fewer);
   * Backups page: ``document.querySelectorAll("section.task").length`` equals N.

   The same method for both: "ready ms" (in-page clock, from the navigation start, so it includes
   the server's answer and, for the DAG list, its scripts and API calls); the wall time from
   ``driver.get`` until Python saw the mark (polled every 10 ms) is printed as well.

Medians of both, the ratio Backups / DAG list and the goal (<= 2x).  Airflow is always stopped and
the temp folder removed (unless ``--keep``).

    PYTHONPATH=plugins:. .venv/bin/python bench/ui_page.py [--tasks 100] [--sets 50] [--repeat 5]
        [--jobs N] [--timeout S] [--dir DIR] [--keep] [--reuse] [--screenshots DIR] [--seed N] [--quick]
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import logging
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

GOAL = 2.0  # Backups page ready time / DAG list ready time, at most
PREFIX = "ui"
FIRST_EXECUTED = "2026-10-01T00:00:00+00:00"


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


# ---------------------------------------------------------------------------------------------
# Generation
# ---------------------------------------------------------------------------------------------
def source_files(rng: random.Random, folder: Path, count: int = 3) -> None:
    folder.mkdir(parents=True)
    for j in range(count):
        (folder / f"part{j}.conf").write_text("".join(f"key{k}={rng.getrandbits(64):x}\n"
                                                      for k in range(rng.randint(20, 120))))


def generate(base: Path, tasks: int, sets: int, seed: int) -> tuple[Path, Path, list[str]]:
    """Specs, their DAG files and source trees; the task names."""
    rng = random.Random(seed)
    dags, specs = base / "dags", base / "specs"
    dags.mkdir(parents=True)
    specs.mkdir(parents=True)
    keep = max(sets, 50)
    names = []
    for i in range(tasks):
        name = f"{PREFIX}_{i:03d}"
        data = base / "data" / name
        data.mkdir(parents=True)
        sources = {}
        for source in ("OMS", "LdapServer") if i % 2 else ("OMS",):
            src = base / "src" / name / source
            source_files(rng, src)
            sources[source] = {"kind": "files", "paths": [str(src)],
                               "target": {"type": "LocalDir", "path": "LocalBackup", "max_backups": keep}}
        spec = {
            "name": name, "description": f"ui_page benchmark task {i}", "created": "2026-09-01T10:00:00+08:00",
            "cluster_version": "3.1.0", "timezone": "Asia/Shanghai", "policy": "full_then_incremental",
            "data_path": str(data), "sources": sources,
        }
        if i % 3 == 2:
            spec.update(type="periodic", schedule={"start": "2030-01-01T00:00:00+08:00", "period": "day"})
        else:
            spec["type"] = "manual"
        (specs / f"{name}.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
        shutil.copy(REPO / "dags" / "backup_default.py", dags / f"backup_{name}.py")
        names.append(name)
    return dags, specs, names


def count_sets(spec) -> int:
    """The committed sets of every source of the task, read with ``Catalog.read`` as the page does;
    an invalid manifest is an error."""
    import pendulum

    from metabackup import pipeline

    committed = 0
    for source in spec.sources:
        catalog = pipeline.SetRun.of(spec, source.name, pendulum.parse(FIRST_EXECUTED)).catalog()
        if catalog.invalid:
            raise RuntimeError(f"{spec.name} {source.name}: invalid manifests {catalog.invalid[:2]}")
        committed += len(catalog.sets)
    return committed


def make_sets(spec_path: str, sets: int, seed: int) -> tuple[str, int, float]:
    """(pool worker) ``sets`` real backup runs of one task, an hour of executed time apart, one line of a
    source file changed before each; the task, the committed sets it now has, the seconds it took."""
    import pendulum

    from metabackup import pipeline
    from metabackup.spec import load_spec

    logging.disable(logging.WARNING)
    began = time.monotonic()
    spec = load_spec(spec_path)
    rng = random.Random(f"{seed}-{spec.name}")
    first = pendulum.parse(FIRST_EXECUTED)
    for n in range(sets):
        for source in spec.sources:
            part = Path(source.options.paths[0]) / f"part{rng.randrange(3)}.conf"
            with part.open("a") as handle:
                handle.write(f"run{n}={rng.getrandbits(64):x}\n")
        result = pipeline.backup(spec, executed=first.add(hours=n))
        missing = [s for s, r in result.items() if not r or not r.get("set")]
        if missing:
            raise RuntimeError(f"{spec.name} run {n}: no set committed for {missing}: {result}")
    return spec.name, count_sets(spec), time.monotonic() - began


def all_sets(specs: Path, names: list[str], sets: int, seed: int, jobs: int) -> tuple[int, float]:
    began = time.monotonic()
    total = 0
    with concurrent.futures.ProcessPoolExecutor(jobs) as pool:
        futures = [pool.submit(make_sets, str(specs / f"{n}.yaml"), sets, seed) for n in names]
        for done, future in enumerate(concurrent.futures.as_completed(futures), 1):
            _, committed, _ = future.result()
            total += committed
            if done % max(1, len(names) // 10) == 0 or done == len(names):
                log(f"  sets for {done}/{len(names)} tasks ({total} sets) after {time.monotonic() - began:.0f} s")
    return total, time.monotonic() - began


# ---------------------------------------------------------------------------------------------
# Airflow
# ---------------------------------------------------------------------------------------------
def wait_all_listed(api, expected: set[str], timeout: float) -> float:
    began = time.monotonic()
    last_report = 0.0
    while True:
        listed: set[str] = set()
        received = 0  # the offset grows by what each page returned, so this ends even while DAGs appear
        while True:
            page = api.get(f"/api/v2/dags?limit=100&offset={received}&order_by=dag_id")
            received += len(page["dags"])
            listed |= {d["dag_id"] for d in page["dags"]}
            if not page["dags"] or received >= page["total_entries"]:
                break
        errors = api.import_errors()
        if errors:
            raise RuntimeError("import errors:\n" + "\n".join(f"{e.get('filename')}: {e.get('stack_trace', '')[-1500:]}"
                                                              for e in errors[:3]))
        missing = expected - listed
        if not missing:
            return time.monotonic() - began
        if time.monotonic() - last_report > 20:
            log(f"  {len(expected) - len(missing)}/{len(expected)} DAGs listed after {time.monotonic() - began:.0f} s")
            last_report = time.monotonic()
        if time.monotonic() - began > timeout:
            raise RuntimeError(f"{len(missing)} DAGs not listed within {timeout:.0f} s, e.g. {sorted(missing)[:5]}")
        time.sleep(2)


# ---------------------------------------------------------------------------------------------
# Browser
# ---------------------------------------------------------------------------------------------
WATCH = """
(() => {
  const ready = () => { %s };
  let observer = null, timer = null;
  const check = () => {
    if (window.__uibReady !== undefined) return;
    let ok = false;
    try { ok = ready(); } catch (e) { ok = false; }
    if (ok) {
      window.__uibReady = performance.now();
      if (observer) observer.disconnect();
      if (timer) clearInterval(timer);
    }
  };
  observer = new MutationObserver(check);
  observer.observe(document, {childList: true, subtree: true});
  timer = setInterval(check, 5);
})();
"""

# Distinct links to /dags/<id> (the path ends with the id) whose id is one of this deployment's DAGs.
DAG_LINKS = """
const ids = new Set(%s);
const seen = new Set();
for (const a of document.querySelectorAll('a[href]')) {
  const path = new URL(a.href, location.href).pathname.replace(/\\/+$/, '');
  const id = decodeURIComponent(path.slice(path.lastIndexOf('/') + 1));
  if (path.endsWith('/dags/' + id) && ids.has(id)) seen.add(id);
}
return seen.size;
"""


class Browser:
    def __init__(self, url: str, password: str, timeout: float):
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service

        options = webdriver.ChromeOptions()
        options.binary_location = shutil.which("chromium") or shutil.which("chromium-browser") or ""
        for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1400,1000"):
            options.add_argument(arg)
        self.driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
        self.driver.set_page_load_timeout(timeout)
        self.url, self.timeout = url, timeout
        self.driver.execute_cdp_cmd("Page.enable", {})
        self._script: str | None = None
        self.timing: list[float] = [0, 0, 0]
        self._login(password)

    def _login(self, password: str) -> None:
        from selenium.webdriver.common.by import By
        from selenium.webdriver.support import expected_conditions as ec
        from selenium.webdriver.support.ui import WebDriverWait

        wait = WebDriverWait(self.driver, self.timeout)
        self.driver.get(f"{self.url}/auth/login")
        wait.until(ec.presence_of_element_located((By.NAME, "username"))).send_keys("admin")
        self.driver.find_element(By.NAME, "password").send_keys(password)
        self.driver.find_element(By.XPATH, "//button[@type='submit']").click()
        wait.until(lambda d: any(c["name"] == "_token" for c in d.get_cookies()))

    def load(self, path: str, condition_js: str) -> tuple[float, float]:
        """Navigate to ``path`` with ``condition_js`` (a function body returning true when the page is
        ready) watched from the document's start; (ready ms on the page's clock, wall ms until seen).
        The document's navigation timing is left in ``self.timing`` (ms: first byte, last byte, DOMContentLoaded)."""
        if self._script is not None:
            self.driver.execute_cdp_cmd("Page.removeScriptToEvaluateOnNewDocument", {"identifier": self._script})
        self._script = self.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument",
                                                   {"source": WATCH % condition_js})["identifier"]
        began = time.perf_counter()
        self.driver.get(f"{self.url}{path}")
        deadline = began + self.timeout
        while True:
            ready = self.driver.execute_script("return window.__uibReady")
            if ready is not None:
                wall = (time.perf_counter() - began) * 1000
                self.timing = self.driver.execute_script(
                    "const t = performance.getEntriesByType('navigation')[0];"
                    "return t ? [t.responseStart, t.responseEnd, t.domContentLoadedEventEnd] : null") or [0, 0, 0]
                return float(ready), wall
            if time.perf_counter() > deadline:
                raise RuntimeError(f"{path}: not ready within {self.timeout:.0f} s ({condition_js.strip()[:200]})")
            time.sleep(0.01)

    def count(self, script: str) -> int:
        return int(self.driver.execute_script(script))

    def quit(self) -> None:
        self.driver.quit()


def dag_list_page_rows(browser: Browser, links_js: str, total: int, settle: float = 3.0) -> int:
    """Load /dags once and watch the DAG links until their count has not changed for ``settle`` s."""
    browser.load("/dags", f"{links_js.replace('return seen.size;', 'return seen.size > 0;')}")
    last, since = browser.count(links_js), time.monotonic()
    deadline = time.monotonic() + browser.timeout
    while time.monotonic() - since < settle:
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
        now = browser.count(links_js)
        if now != last:
            last, since = now, time.monotonic()
    if not 0 < last <= total:
        raise RuntimeError(f"/dags shows {last} links to this deployment's {total} DAGs")
    return last


def row(metric: str, ours: str, base: str, ratio: str, goal: str, met: str) -> str:
    return f"| {metric} | {ours} | {base} | {ratio} | {goal} | {met} |"


# ---------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=100, help="backup tasks (specs) on the page (default 100)")
    parser.add_argument("--sets", type=int, default=50, help="committed sets per source (default 50)")
    parser.add_argument("--repeat", type=int, default=5, help="loads of each page, alternating (default 5)")
    parser.add_argument("--jobs", type=int, default=len(os.sched_getaffinity(0)),
                        help="processes making the sets (default: the cores)")
    parser.add_argument("--timeout", type=float, default=120, help="limit of one page load, in s (default 120)")
    parser.add_argument("--dir", help="work here instead of a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated folders and Airflow's home")
    parser.add_argument("--reuse", action="store_true",
                        help="with --dir: use the specs, DAG files and sets a run with --keep left there (same "
                             "--tasks and --sets; every catalog is read and counted) instead of making new ones")
    parser.add_argument("--screenshots", metavar="DIR", help="save a screenshot of both pages (after the warm-up) here")
    parser.add_argument("--seed", type=int, default=20261129)
    parser.add_argument("--quick", action="store_true",
                        help="for run_all.py --quick: --tasks 20 --sets 10 --repeat 3 (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(tasks=20, sets=10, repeat=3)
    args = parser.parse_args()

    from harness import airflow_standalone

    if args.reuse and not args.dir:
        parser.error("--reuse needs --dir")
    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="metabackup-bench-ui-"))
    base.mkdir(parents=True, exist_ok=True)
    subdirs = ("dags", "specs", "src", "data", "airflow")
    for sub in subdirs[-1:] if args.reuse else subdirs:
        shutil.rmtree(base / sub, ignore_errors=True)
    instance = browser = None
    try:
        n = args.tasks
        sources = sum(2 if i % 2 else 1 for i in range(n))
        if args.reuse:
            from metabackup.spec import load_spec

            dags, specs = base / "dags", base / "specs"
            names = [f"{PREFIX}_{i:03d}" for i in range(n)]
            found = sorted(p.stem for p in specs.glob("*.yaml"))
            if found != names or sorted(p.name for p in dags.glob("backup_*.py")) != [f"backup_{x}.py" for x in names]:
                raise RuntimeError(f"--reuse: {specs} and {dags} do not hold the {n} tasks' specs and DAG files")
            committed = sum(count_sets(load_spec(specs / f"{x}.yaml")) for x in names)
            log(f"reusing {n} specs ({sources} sources), DAG files and {committed} committed sets under {base}")
        else:
            dags, specs, names = generate(base, n, args.sets, args.seed)
            log(f"generated {n} specs ({sources} sources) and DAG files under {base}; making {args.sets} sets per "
                f"source with {args.jobs} processes")
            committed, took = all_sets(specs, names, args.sets, args.seed, args.jobs)
            log(f"{committed} sets committed in {took:.0f} s ({took / committed * 1000:.0f} ms each, "
                f"{args.jobs} processes)")
        if committed != sources * args.sets:
            raise RuntimeError(f"{committed} sets committed, expected {sources * args.sets}")

        began = time.monotonic()
        instance = airflow_standalone.start(base / "airflow", dags, specs, timeout=600)
        log(f"airflow standalone healthy after {time.monotonic() - began:.0f} s at {instance.url}")
        api = instance.client()
        expected = {f"{kind}_{name}" for name in names for kind in ("backup", "restore")}
        listed = wait_all_listed(api, expected, timeout=1800)
        log(f"all {len(expected)} DAGs listed {listed:.0f} s later; no import errors")

        password = json.loads((instance.home / "passwords.json").read_text())[airflow_standalone.USER]
        browser = Browser(instance.url, password, args.timeout)
        links_js = DAG_LINKS % json.dumps(sorted(expected))
        rows = dag_list_page_rows(browser, links_js, len(expected))
        log(f"/dags renders {rows} of the {len(expected)} DAGs (one page); ready = {rows} DAG links")
        dag_ready = links_js.replace("return seen.size;", f"return seen.size >= {rows};")
        ours_ready = f'return document.querySelectorAll("section.task").length === {n};'

        # warm-up (not counted): scripts and styles cached, the API server's first requests served
        shots = Path(args.screenshots).resolve() if args.screenshots else None
        if shots:
            shots.mkdir(parents=True, exist_ok=True)
        browser.load("/dags", dag_ready)
        if shots:
            browser.driver.save_screenshot(str(shots / "dags.png"))
        browser.load("/metabackup/backups", ours_ready)
        if shots:
            browser.driver.save_screenshot(str(shots / "backups.png"))
        shown = browser.count('return document.querySelectorAll("section.task").length')
        set_rows = browser.count('return document.querySelectorAll("section.task tr").length')
        log(f"/metabackup/backups: {shown} section.task, {set_rows} table rows in them")

        base_ms, ours_ms, base_wall, ours_wall, base_ttfb, ours_ttfb, ours_html = [], [], [], [], [], [], []
        for r in range(args.repeat):
            ready, wall = browser.load("/dags", dag_ready)
            base_ms.append(ready)
            base_wall.append(wall)
            base_ttfb.append(browser.timing[0])
            ready, wall = browser.load("/metabackup/backups", ours_ready)
            ours_ms.append(ready)
            ours_wall.append(wall)
            ours_ttfb.append(browser.timing[0])
            ours_html.append(browser.timing[1])
            log(f"  round {r + 1}: /dags {base_ms[-1]:.0f} ms (wall {base_wall[-1]:.0f}; its HTML's first byte "
                f"{base_ttfb[-1]:.0f}), /metabackup/backups {ours_ms[-1]:.0f} ms (wall {ours_wall[-1]:.0f}; first byte "
                f"{ours_ttfb[-1]:.0f}, last byte {ours_html[-1]:.0f})")

        mb, mo = statistics.median(base_ms), statistics.median(ours_ms)
        wb, wo = statistics.median(base_wall), statistics.median(ours_wall)
        print()
        print(f"DAG list /dags ({rows} rows of {len(expected)} DAGs), ready ms: {', '.join(f'{x:.0f}' for x in base_ms)}")
        print(f"Backups /metabackup/backups ({n} tasks, {committed} sets), ready ms: {', '.join(f'{x:.0f}' for x in ours_ms)}")
        print()
        print(row("metric", "ours", "baseline", "ratio", "goal", "met"))
        print(row("---", "---", "---", "---", "---", "---"))
        print(row(f"Backups page ({n} tasks x {args.sets} sets per source) vs /dags ({len(expected)} DAGs), "
                  f"median ready ms from navigation start", f"{mo:.0f}", f"{mb:.0f}", f"{mo / mb:.2f}x",
                  f"<= {GOAL:.0f}x DAG list", "yes" if mo / mb <= GOAL else "NO"))
        print(row("same, median wall ms from driver.get until seen", f"{wo:.0f}", f"{wb:.0f}", f"{wo / wb:.2f}x",
                  "-", "-"))
        print(row("median ms to the HTML's first byte (server time; the DAG list's data comes later from the API)",
                  f"{statistics.median(ours_ttfb):.0f}", f"{statistics.median(base_ttfb):.0f}", "-", "-", "-"))
        return 0
    except Exception as exc:
        log(f"FAILED: {type(exc).__name__}: {exc}")
        if instance is not None:
            print(f"--- standalone.log (end) ---\n{instance.log_tail(40)}")
        return 1
    finally:
        if browser is not None:
            browser.quit()
        if instance is not None:
            began = time.monotonic()
            instance.stop()
            log(f"airflow stopped in {time.monotonic() - began:.0f} s")
        if args.keep:
            print(f"kept {base}")
        elif args.dir:
            for sub in subdirs:
                shutil.rmtree(base / sub, ignore_errors=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
