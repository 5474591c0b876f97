"""LdapServer backup benchmark: our export against ldapsearch and slapcat, the size of a 1 %
incremental (accesslog and digest methods), and our peak memory, all in one run.

    PYTHONPATH=plugins:. .venv/bin/python bench/ldap_export.py [--entries 100000] [--keep]

Prints ratios against baselines measured in the same run; absolute numbers from different runs
or machines are not comparable.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import ldap
import pendulum
import yaml

from harness import slapd

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")

CHILD = """
import json, resource, sys, time, pendulum
from metabackup import pipeline
from metabackup.spec import load_spec
spec_path, hour, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
spec = load_spec(spec_path)
run = pipeline.SetRun.of(spec, "LdapServer", pendulum.datetime(2026, 11, 24, 3 + hour, tz="UTC"))
from metabackup.connections import get_connection
get_connection("bench_ldap")  # Airflow's one-time start-up (~3 s) is not part of the export
decision = pipeline.decide(run)
started = time.monotonic()
for step in steps:
    getattr(pipeline, step)(run)
elapsed = time.monotonic() - started
manifest = json.loads((run.workdir / "manifest.json").read_text()) if (run.workdir / "manifest.json").exists() else None
print(json.dumps({"seconds": elapsed, "type": decision.type, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "size": manifest["archive"]["size"] if manifest else None,
                  "method": manifest["position"]["method"] if manifest else None}))
"""


def ours(spec_path: Path, hour: int, steps: str = "snapshot,archive,upload,verify") -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "plugins")}
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec_path), str(hour), steps], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"our backup failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_spec(folder: Path, name: str, method: str) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.5.0", "type": "manual",
        "data_path": str(folder / f"data-{name}"),
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": "bench_ldap", "base_dns": [slapd.SUFFIX],
                                   "change_method": method, "include_config": False,
                                   "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return path


def timed(command: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds of the full export (default 2)")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-ldap-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    server = slapd.prepare(work / "slapd", accesslog=True)
    try:
        started = time.monotonic()
        slapd.seed_offline(server, slapd.seed_ldif(users=args.entries, groups=max(1, args.entries // 1000)))
        slapd.start(server)
        print(f"seeded {args.entries} users by slapadd in {time.monotonic() - started:.1f} s")
        os.environ["AIRFLOW_CONN_BENCH_LDAP"] = server.connection_uri()
        auth = ["-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password]

        rounds = {"ours": [], "ldapsearch": [], "slapcat": []}
        sizes = {}
        for i in range(args.repeat):
            result = ours(write_spec(work, f"full{i}", "auto"), 0, "snapshot,archive")
            rounds["ours"].append(result["seconds"])
            sizes["ours"], rss_full = result.get("size"), result["maxrss_kb"]
            with open(work / "ldapsearch.ldif", "wb") as out:
                rounds["ldapsearch"].append(timed(["ldapsearch", *auth, "-LLL", "-E", "pr=500/noprompt", "-b", slapd.SUFFIX,
                                                   "(objectClass=*)", "*", "+"], stdout=out))
            rounds["slapcat"].append(timed(["slapcat", "-f", str(server.conf), "-b", slapd.SUFFIX, "-l", str(work / "slapcat.ldif")]))
            (work / "slapcat.ldif").unlink()
        staged = sorted((work / "data-full0").rglob("*.tar.gz"))
        sizes["ours"] = staged[0].stat().st_size if staged else None
        sizes["ldapsearch"] = (work / "ldapsearch.ldif").stat().st_size
        med = {k: sorted(v)[len(v) // 2] for k, v in rounds.items()}
        print(f"\nfull export of {args.entries} entries, median of {args.repeat} alternating rounds")
        print(f"{'':28}{'seconds':>9}{'entries/s':>11}")
        for k in ("ours", "ldapsearch", "slapcat"):
            print(f"{k:28}{med[k]:9.2f}{args.entries / med[k]:11.0f}")
        print(f"ratio throughput ours/ldapsearch {med['ldapsearch'] / med['ours']:.2f}x   ours/slapcat {med['slapcat'] / med['ours']:.2f}x")
        print(f"(ours = snapshot + archive: paged LDIF export, per-entry index, tar.gz, SHA-256; ldapsearch writes plain LDIF "
              f"{sizes['ldapsearch'] >> 20} MiB; our archive {sizes['ours'] >> 20 if sizes['ours'] else '?'} MiB)")
        print(f"our peak RSS for {args.entries} entries: {rss_full // 1024} MiB (Airflow's imports alone take about 130 MiB)")

        # 1 % incremental, both methods
        specs = {m: write_spec(work, f"inc{m}", m) for m in ("accesslog", "digest")}
        fulls = {m: ours(p, 0) for m, p in specs.items()}
        client = ldap.initialize(server.url)
        client.simple_bind_s(server.admin_dn, server.password)
        changed = max(1, args.entries // 100)
        for i in range(0, args.entries, args.entries // changed):
            dn = f"uid=user{i:05d},ou=People,{slapd.SUFFIX}"
            client.modify_s(dn, [(ldap.MOD_REPLACE, "mail", [f"changed{i}@bench.example".encode()]),
                                 (ldap.MOD_REPLACE, "description", [b"changed by the benchmark"])])
        client.unbind_s()
        print(f"\nchanged {changed} entries (1 %)")
        print(f"{'method':12}{'full MiB':>10}{'incr KiB':>10}{'size ratio':>12}{'full s':>8}{'incr s':>8}{'time ratio':>12}")
        for method, path in specs.items():
            inc = ours(path, 1)
            if inc["type"] != "incremental" or inc["method"] != method:
                raise SystemExit(f"expected an incremental by {method}, got {inc}")
            full = fulls[method]
            print(f"{method:12}{full['size'] / 2**20:10.1f}{inc['size'] / 1024:10.1f}{inc['size'] / full['size']:12.4f}"
                  f"{full['seconds']:8.1f}{inc['seconds']:8.1f}{inc['seconds'] / full['seconds']:12.2f}")
    finally:
        server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
