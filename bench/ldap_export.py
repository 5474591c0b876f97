"""LdapServer backup benchmark: our export against ldapsearch and slapcat, the size of a 1 %
incremental (accesslog and digest methods), and our peak memory, all in one run.

    PYTHONPATH=plugins:. .venv/bin/python bench/ldap_export.py [--entries 100000] [--rss-entries 500000]
        [--repeat 2] [--profile FILE] [--keep]

Prints ratios against baselines measured in the same run; absolute numbers from different runs
or machines are not comparable.  Ends with one ``metric | ours | baseline | ratio | goal | met``
line per goal.
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
import json, os, resource, sys, time, pendulum
from metabackup import pipeline
from metabackup.spec import load_spec
spec_path, hour, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(",")
spec = load_spec(spec_path)
run = pipeline.SetRun.of(spec, "LdapServer", pendulum.datetime(2026, 11, 24, 3 + hour, tz="UTC"))
from metabackup.connections import get_connection
get_connection("bench_ldap")  # Airflow's one-time start-up (~3 s) is not part of the export
decision = pipeline.decide(run)
rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
profile = os.environ.get("BENCH_PROFILE")
if profile:
    import cProfile
    profiler = cProfile.Profile()
    profiler.enable()
started = time.monotonic()
for step in steps:
    getattr(pipeline, step)(run)
elapsed = time.monotonic() - started
if profile:
    profiler.disable()
    profiler.dump_stats(profile)
manifest = json.loads((run.workdir / "manifest.json").read_text()) if (run.workdir / "manifest.json").exists() else None
print(json.dumps({"seconds": elapsed, "type": decision.type, "maxrss_kb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
                  "rss_before_kb": rss_before,
                  "size": manifest["archive"]["size"] if manifest else None,
                  "method": manifest["position"]["method"] if manifest else None}))
"""


def ours(spec_path: Path, hour: int, steps: str = "snapshot,archive,upload,verify,retention", profile: str | None = None) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1] / "plugins")}
    if profile:
        env["BENCH_PROFILE"] = profile
    out = subprocess.run([sys.executable, "-c", CHILD, str(spec_path), str(hour), steps], env=env,
                         capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"our backup failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def write_spec(folder: Path, name: str, change_method: str, **options) -> Path:
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.5.0", "type": "manual",
        "data_path": str(folder / f"data-{name}"),
        "sources": {"LdapServer": {"kind": "ldap", "conn_id": "bench_ldap", "base_dns": [slapd.SUFFIX],
                                   "change_method": change_method, "include_config": False, **options,
                                   "target": {"type": "LocalDir", "max_backups": 5}}}}))
    return path


def timed(command: list[str], **kwargs) -> float:
    started = time.monotonic()
    subprocess.run(command, check=True, **kwargs)
    return time.monotonic() - started


def write_seed(path: Path, users: int, groups: int) -> None:
    """The DIT of :func:`harness.slapd.seed_ldif` (same entries) written to ``path`` a chunk at a
    time, with the group memberships computed in one pass: for seeds too large for one string."""
    import base64

    from metabackup.scratch_slapd import ssha

    head = slapd.seed_ldif(users=0, groups=0)
    members: list[list[str]] = [[] for _ in range(groups)]
    with open(path, "w") as out:
        out.write(head.split("\ndn: uid=hdfs,")[0].rstrip("\n") + "\n\n")
        chunk = []
        for i in range(users):
            members[i % groups].append(f"memberUid: user{i:05d}\n")
            chunk.append(f"""dn: uid=user{i:05d},ou=People,{slapd.SUFFIX}
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: shadowAccount
uid: user{i:05d}
cn: User {i}
sn: Number{i}
givenName: User
mail: user{i:05d}@hadoop.example
uidNumber: {10000 + i}
gidNumber: {20000 + i % groups}
homeDirectory: /home/user{i:05d}
loginShell: /bin/bash
userPassword: {ssha(f"password-{i}")}
""" + (f"jpegPhoto:: {base64.b64encode(os.urandom(64)).decode()}\n" if i % 7 == 0 else "") + "\n")
            if len(chunk) >= 10_000:
                out.write("".join(chunk))
                chunk = []
        out.write("".join(chunk))
        for g in range(groups):
            out.write(f"dn: cn=group{g},ou=Groups,{slapd.SUFFIX}\nobjectClass: posixGroup\ncn: group{g}\n"
                      f"gidNumber: {20000 + g}\n{''.join(members[g])}\n")
        out.write("dn: uid=hdfs," + head.split("\ndn: uid=hdfs,", 1)[1].rstrip("\n") + "\n")


def seeded_server(folder: Path, users: int) -> slapd.SlapdInstance:
    server = slapd.prepare(folder, accesslog=True)
    seed = folder / "seed.ldif"
    write_seed(seed, users, max(1, users // 1000))
    result = subprocess.run(["slapadd", "-q", "-f", str(server.conf), "-b", server.suffix, "-l", str(seed)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"slapadd failed: {result.stderr.strip()[-2000:]}")
    seed.unlink()
    return slapd.start(server)


def change_one_percent(server: slapd.SlapdInstance, entries: int, round_: int) -> int:
    client = ldap.initialize(server.url)
    client.simple_bind_s(server.admin_dn, server.password)
    changed = max(1, entries // 100)
    for i in range(round_, entries, entries // changed):
        dn = f"uid=user{i:05d},ou=People,{slapd.SUFFIX}"
        client.modify_s(dn, [(ldap.MOD_REPLACE, "mail", [f"changed{i}.{round_}@bench.example".encode()]),
                             (ldap.MOD_REPLACE, "description", [f"changed by the benchmark, round {round_}".encode()])])
    client.unbind_s()
    return changed


def goal_line(metric: str, ours_value: str, baseline: str, ratio: float, goal: str, met: bool | None) -> str:
    mark = "-" if met is None else ("yes" if met else "NO")
    return f"{metric} | {ours_value} | {baseline} | {ratio:.3f} | {goal} | {mark}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--rss-entries", type=int, default=500_000,
                        help="users of the second server whose export's peak RSS is measured (0: skip)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating rounds of the full export (default 2)")
    parser.add_argument("--profile", help="also run our full export once under cProfile, stats to this file")
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: 10 000 entries (also for the RSS export), 1 round (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(entries=10_000, rss_entries=10_000, repeat=1)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="metabackup-bench-ldap-"))
    os.environ.setdefault("AIRFLOW_HOME", str(work / "airflow"))
    goals: list[str] = []
    server = None
    try:
        started = time.monotonic()
        server = seeded_server(work / "slapd", args.entries)
        print(f"seeded {args.entries} users by slapadd in {time.monotonic() - started:.1f} s")
        os.environ["AIRFLOW_CONN_BENCH_LDAP"] = server.connection_uri()
        auth = ["-x", "-H", server.url, "-D", server.admin_dn, "-w", server.password]

        rounds = {"ours": [], "ldapsearch": [], "slapcat": []}
        sizes = {}
        for i in range(args.repeat):
            result = ours(write_spec(work, f"full{i}", "auto"), 0, "snapshot,archive")
            rounds["ours"].append(result["seconds"])
            rss_full, rss_imports = result["maxrss_kb"], result["rss_before_kb"]
            with open(work / "ldapsearch.ldif", "wb") as out:
                rounds["ldapsearch"].append(timed(["ldapsearch", *auth, "-LLL", "-E", "pr=500/noprompt", "-b", slapd.SUFFIX,
                                                   "(objectClass=*)", "*", "+"], stdout=out))
            rounds["slapcat"].append(timed(["slapcat", "-f", str(server.conf), "-b", slapd.SUFFIX, "-l", str(work / "slapcat.ldif")]))
            (work / "slapcat.ldif").unlink()
        if args.profile:
            ours(write_spec(work, "profiled", "auto"), 0, "snapshot,archive", profile=args.profile)
            import pstats

            print(f"\nprofile of our full export ({args.profile}), top 25 by internal time:")
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
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
        print(f"our peak RSS for {args.entries} entries: {rss_full // 1024} MiB ({rss_imports // 1024} MiB after the imports, "
              "Airflow's mostly)")
        ratio = med["ldapsearch"] / med["ours"]
        goals.append(goal_line(f"export throughput, {args.entries} entries (x ldapsearch -E pr=500 to a file)",
                               f"{args.entries / med['ours']:.0f}/s", f"{args.entries / med['ldapsearch']:.0f}/s",
                               ratio, ">= 0.5", ratio >= 0.5))
        ratio = med["slapcat"] / med["ours"]
        goals.append(goal_line(f"export throughput, {args.entries} entries (x slapcat)", f"{args.entries / med['ours']:.0f}/s",
                               f"{args.entries / med['slapcat']:.0f}/s", ratio, "(for reference)", None))

        # method: slapcat (the same server, running), alternating with bare slapcat
        cat = {"snapshot": [], "snapshot+archive": [], "slapcat": []}
        for i in range(args.repeat):
            for steps in ("snapshot", "snapshot+archive"):
                spec = write_spec(work, f"slapcat{i}{len(steps)}", "auto", method="slapcat", slapd_conf=str(server.conf))
                cat[steps].append(ours(spec, 0, steps.replace("+", ","))["seconds"])
            cat["slapcat"].append(timed(["slapcat", "-f", str(server.conf), "-b", slapd.SUFFIX, "-l", str(work / "slapcat.ldif")]))
            (work / "slapcat.ldif").unlink()
        cmed = {k: sorted(v)[len(v) // 2] for k, v in cat.items()}
        print(f"\nmethod: slapcat, {args.entries} entries: snapshot {cmed['snapshot']:.2f} s, snapshot + archive "
              f"{cmed['snapshot+archive']:.2f} s; bare slapcat {cmed['slapcat']:.2f} s")
        ratio = cmed["slapcat"] / cmed["snapshot"]
        goals.append(goal_line(f"method slapcat export (snapshot), {args.entries} entries (x bare slapcat)",
                               f"{args.entries / cmed['snapshot']:.0f}/s", f"{args.entries / cmed['slapcat']:.0f}/s",
                               ratio, ">= 0.8", ratio >= 0.8))
        ratio = cmed["slapcat"] / cmed["snapshot+archive"]
        goals.append(goal_line(f"method slapcat snapshot + archive (tar.gz), {args.entries} entries (x bare slapcat)",
                               f"{args.entries / cmed['snapshot+archive']:.0f}/s", f"{args.entries / cmed['slapcat']:.0f}/s",
                               ratio, "(for reference)", None))

        # 1 % incremental, both methods; digest twice (the second one reads its parent's delta)
        specs = {m: write_spec(work, f"inc{m}", m) for m in ("accesslog", "digest")}
        fulls = {m: ours(p, 0) for m, p in specs.items()}
        changed = change_one_percent(server, args.entries, 0)
        print(f"\nchanged {changed} entries (1 %)")
        print(f"{'method':12}{'full MiB':>10}{'incr KiB':>10}{'size ratio':>12}{'full s':>8}{'incr s':>8}{'time ratio':>12}")
        incs = {}
        for method, path in specs.items():
            inc = incs[method] = ours(path, 1)
            if inc["type"] != "incremental" or inc["method"] != method:
                raise SystemExit(f"expected an incremental by {method}, got {inc}")
            full = fulls[method]
            print(f"{method:12}{full['size'] / 2**20:10.1f}{inc['size'] / 1024:10.1f}{inc['size'] / full['size']:12.4f}"
                  f"{full['seconds']:8.1f}{inc['seconds']:8.1f}{inc['seconds'] / full['seconds']:12.2f}")
        change_one_percent(server, args.entries, 1)
        second = ours(specs["digest"], 2)
        if second["type"] != "incremental" or second["method"] != "digest":
            raise SystemExit(f"expected a second incremental by digest, got {second}")
        print(f"{'digest, 2nd':12}{'':10}{second['size'] / 1024:10.1f}{second['size'] / fulls['digest']['size']:12.4f}"
              f"{'':8}{second['seconds']:8.1f}{second['seconds'] / fulls['digest']['seconds']:12.2f}   (on the first incremental)")
        for label, inc in (("1st", incs["digest"]), ("2nd", second)):
            ratio = inc["size"] / fulls["digest"]["size"]
            goals.append(goal_line(f"digest incremental after a 1 % change, {label} in the chain (size x its full)",
                                   f"{inc['size'] / 1024:.0f} KiB", f"{fulls['digest']['size'] / 1024:.0f} KiB", ratio,
                                   "<= 0.10", ratio <= 0.10))
        ratio = incs["accesslog"]["size"] / fulls["accesslog"]["size"]
        goals.append(goal_line("accesslog incremental after a 1 % change (size x its full)",
                               f"{incs['accesslog']['size'] / 1024:.0f} KiB", f"{fulls['accesslog']['size'] / 1024:.0f} KiB",
                               ratio, "(for reference)", None))
        server.stop()
        server = None

        if args.rss_entries:
            started = time.monotonic()
            server = seeded_server(work / "slapd-rss", args.rss_entries)
            print(f"\nseeded {args.rss_entries} users by slapadd in {time.monotonic() - started:.1f} s")
            os.environ["AIRFLOW_CONN_BENCH_LDAP"] = server.connection_uri()
            big = ours(write_spec(work, "rss", "auto"), 0, "snapshot,archive")
            mib, base_mib = big["maxrss_kb"] / 1024, big["rss_before_kb"] / 1024
            print(f"full export of {args.rss_entries} entries: {big['seconds']:.1f} s "
                  f"({args.rss_entries / big['seconds']:.0f} entries/s), archive {big['size'] / 2**20 if big['size'] else 0:.0f} MiB, "
                  f"peak RSS {mib:.0f} MiB ({base_mib:.0f} MiB after the imports)")
            goals.append(goal_line(f"peak RSS of the export, {args.rss_entries} entries (whole process, MiB)",
                                   f"{mib:.0f}", f"{base_mib:.0f} after imports", mib / 256, "<= 256 MiB", mib <= 256))
        print("\nmetric | ours | baseline | ratio | goal | met")
        for line in goals:
            print(line)
    finally:
        if server is not None:
            server.stop()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            print(f"kept {work}")


if __name__ == "__main__":
    main()
