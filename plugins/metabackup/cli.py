"""Command line: ``python -m metabackup <command>`` (run with PYTHONPATH=plugins).

    new-task NAME      scaffold include/backup_tasks/NAME.yaml (creation time filled in) and its DAG file
    validate           check every spec of the spec folder; exit 1 on any problem
    list               the catalog of a task: every committed set per source, with its chain
    backup             back up a task's sources now, without a scheduler (same steps as the DAG)
    unlock             break the lease a dead run left on a source
    restore            rebuild a source's state at a set (default: the latest) into a new directory
    keys generate      print a new key-encryption key (for an Airflow connection's password)
    keys rotate        re-wrap every encrypted set's data key under a new key
    decrypt            decrypt one archive with a key file, without Airflow (disaster recovery)
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from pathlib import Path

import pendulum

from metabackup.catalog import Catalog
from metabackup.spec import SpecError, dag_file_name, load_spec, load_spec_dir

REPO = Path(__file__).resolve().parents[2]
DEFAULT_SPEC_DIR = REPO / "include" / "backup_tasks"
SPEC_DIR_ENV = "METABACKUP_SPEC_DIR"  # as metabackup.airflow.dag_factory (not imported: it pulls in Airflow)
DEFAULT_DAGS_DIR = REPO / "dags"

SPEC_TEMPLATE = """\
# Backup task {name}.  Field reference: README.md, "Task spec".
name: {name}
description: ""
created: {created}    # fixed: names the output directory {name}_<YYYYMMDDHHmmss>
cluster_version: "3.5.0"
timezone: UTC
type: {type}
{schedule}policy:
  type: full_every_n             # full_then_incremental | full_always | full_every_n
  n: 7
data_path: /srv/BigData
sources:
  OMS:
    kind: files
    paths: [/srv/BigData/om-server/conf]
    target:
      type: LocalDir             # default path <data_path>/LocalBackup
      max_backups: 7
"""

DAG_TEMPLATE = '''"""Backup task "{name}": its backup and restore DAGs, compiled from include/backup_tasks/{name}.yaml."""

from metabackup.airflow.dag_factory import dags_for_dag_file

backup_dag, restore_dag = dags_for_dag_file(__file__)
'''


def cmd_new_task(args: argparse.Namespace) -> int:
    created = pendulum.now("UTC").replace(microsecond=0)
    spec_file = Path(args.spec_dir) / f"{args.name}.yaml"
    dag_file = Path(args.dags_dir) / dag_file_name(args.name)
    for path in (spec_file, dag_file):
        if path.exists():
            print(f"{path} already exists; not overwriting", file=sys.stderr)
            return 1
    schedule = ""
    if args.type == "periodic":
        start = created.add(days=1).replace(hour=1, minute=0, second=0)
        schedule = f"schedule:\n  start: {start.to_iso8601_string()}\n  period: day          # hour | day\n  every: 1\n"
    spec_file.parent.mkdir(parents=True, exist_ok=True)
    spec_file.write_text(SPEC_TEMPLATE.format(name=args.name, created=created.to_iso8601_string(),
                                              type=args.type, schedule=schedule))
    try:
        load_spec(spec_file)
    except SpecError as exc:
        spec_file.unlink()
        print(exc, file=sys.stderr)
        return 1
    dag_file.parent.mkdir(parents=True, exist_ok=True)
    dag_file.write_text(DAG_TEMPLATE.format(name=args.name))
    print(f"created {spec_file}\ncreated {dag_file}\nedit the spec's sources and targets, then check it: "
          "python -m metabackup validate", file=args.out)
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    # the folder the DAGs read (dag_factory.spec_dir_for): --spec-dir, else $METABACKUP_SPEC_DIR, else the repo's
    if args.spec_dir:
        spec_dir, origin = Path(args.spec_dir), "--spec-dir"
    elif os.environ.get(SPEC_DIR_ENV):
        spec_dir, origin = Path(os.environ[SPEC_DIR_ENV]), f"${SPEC_DIR_ENV}"
    else:
        spec_dir, origin = DEFAULT_SPEC_DIR, "default"
    if not spec_dir.is_dir():
        print(f"error: spec folder {spec_dir} ({origin}) is not a directory", file=sys.stderr)
        return 1
    print(f"checking {spec_dir} ({origin})", file=sys.stderr)
    specs, errors = load_spec_dir(spec_dir)
    for error in errors:
        print(error, file=sys.stderr)
    for name in sorted(specs):
        print(f"ok  {name}  ({specs[name].path})", file=args.out)
    return 1 if errors else 0


def cmd_list(args: argparse.Namespace) -> int:
    from metabackup.overview import chain_verification
    from metabackup.verification import read_record

    spec = load_spec(args.spec)
    task_dir = spec.task_dir
    rows = []
    for source in spec.sources:
        if args.source and source.name != args.source:
            continue
        for label, config in source.locations():
            if label == "mirror":
                continue  # written with every file of the primary; restores fall back to it
            target = config.open()
            catalog = Catalog.read(target, spec.name, task_dir, source.name, spec.timezone)
            if label == "primary":
                primary = catalog
            verified = read_record(target, task_dir, source.name).get("sets", {})
            for m in catalog.sets:
                chain = catalog.chain(m.set)
                rows.append({"source": source.name, "location": label, "set": m.set, "type": m.type,
                             "parent": m.parent, "size": m.archive.size, "executed_at": m.executed_at,
                             "restorable": chain is not None,
                             "verification": chain_verification(catalog, m.set, verified),
                             "path": f"{config.uri(task_dir)}/{m.archive.name}"})
            for bad in catalog.invalid:
                rows.append({"source": source.name, "location": label, "set": None, "invalid": bad.name,
                             "reason": bad.reason, "restorable": False})
        catalog = primary
        if source.plugin.pitr_coverage:
            from metabackup.overview import pitr_summary

            for gap in (pitr_summary(catalog) or {}).get("gaps", []):
                rows.append({"source": source.name, "set": None, "pitr_gap": gap, "restorable": False})
    if args.json:
        print(json.dumps(rows, indent=2), file=args.out)
    else:
        for r in rows:
            if r.get("invalid"):
                print(f"{r['source']:<10} INVALID     {r['invalid']}: {r['reason']}", file=args.out)
                continue
            if r.get("pitr_gap"):
                gap = r["pitr_gap"]
                print(f"{r['source']:<10} PITR GAP    {gap['after_end']} .. {gap['before_start']} between {gap['after']} "
                      f"and {gap['before']}: {gap['reason']}", file=args.out)
                continue
            flag = "" if r["restorable"] else "  (BROKEN CHAIN)"
            check = r["verification"]
            checked = "never verified" if not check else (
                f"{'verified' if check['ok'] else 'FAILED verification'} {check['verified_at'][:19]}")
            where = "" if r["location"] == "primary" else f" ({r['location']})"
            print(f"{r['source']:<10} {r['type']:<11} {r['size']:>12}  {r['path']}{flag}  [{checked}]{where}", file=args.out)
    return 0


def cmd_backup(args: argparse.Namespace) -> int:
    """Back up a task's sources now, without a scheduler (the same steps as the DAG)."""
    from metabackup.pipeline import backup

    spec = load_spec(args.spec)
    for name in args.source or []:
        spec.source(name)  # an unknown source is an error naming the task's sources
    summary = backup(spec, args.source or None, force_full=args.full)
    print(json.dumps(summary, indent=2, default=str), file=args.out)
    return 0


def cmd_unlock(args: argparse.Namespace) -> int:
    """Break a source's lease by hand (a run that died and will not end; see README *Locks*)."""
    from metabackup.locks import lock_for

    spec = load_spec(args.spec)
    lock = lock_for(spec, spec.source(args.source).name)
    held = lock.holder()
    if held is None:
        print(f"{args.source} of task {spec.name} is not locked", file=args.out)
        return 0
    lock.release()
    print(f"released the lease of {held['holder']} (host {held.get('host')}, since {held.get('since')}) on "
          f"{args.source} of task {spec.name}", file=args.out)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    from metabackup.connections import ConnectionNotFound
    from metabackup.restore import RestoreError, parse_destination, restore_source

    spec = load_spec(args.spec)
    location = f"copy {args.from_copy}" if args.from_copy else None
    if args.from_dir:
        from metabackup.restore import reading_from

        spec, location = reading_from(spec, args.source, args.from_dir), "primary"
    if args.in_place:
        from metabackup.inplace import restore_source_in_place

        result = restore_source_in_place(spec, args.source, args.set, args.point_in_time, location,
                                         allow_version_mismatch=args.allow_version_mismatch)
        print(json.dumps(result, default=str, indent=2), file=args.out)
        return 0
    try:  # the same checks and destination objects as the restore DAG's, before anything runs
        dest = parse_destination(spec, spec.source(args.source), args.dest, keep_running=args.keep_running,
                                 port=args.port)
    except ConnectionNotFound as exc:
        raise RestoreError(f"--dest {args.dest!r}: {exc}; for an ldap source --dest names the Airflow connection "
                           "of an empty server with the set's suffix (e.g. AIRFLOW_CONN_<ID> set from "
                           "DIR/airflow-connection.json of PYTHONPATH=plugins:. python -m harness.slapd start DIR "
                           "--suffix ...)") from None
    result = restore_source(spec, args.source, dest, args.set, point_in_time=args.point_in_time, location=location)
    print(json.dumps(result, default=str, indent=2), file=args.out)
    return 0


LOG_FORMAT = "%(levelname)s %(message)s"
_OWN_HANDLER = logging.StreamHandler(sys.stderr)
_OWN_HANDLER.setFormatter(logging.Formatter(LOG_FORMAT))


def quiet_airflow() -> None:
    """A command's output is its result on stdout and its own messages on stderr.

    Airflow, imported by a command for a connection or a provider hook (LDAP, LocalHDFS), sets up
    logging for its own processes: it replaces the root logger's handlers with its structlog
    handler on stdout, logs INFO lines of its configuration, and its secrets masker warns about
    short connection fields.  None of that is the CLI's: Airflow's logging level is held to
    ERROR in this process (read when Airflow configures its logging, on first import); our own
    messages (``metabackup.*``) have their own handler on stderr, which Airflow's set-up keeps;
    and anything still printed to stdout goes to stderr (``main``)."""
    os.environ["AIRFLOW__LOGGING__LOGGING_LEVEL"] = "ERROR"
    if "airflow" in sys.modules:  # already imported: the CLI called inside a process that uses Airflow
        logging.getLogger("airflow").setLevel(logging.ERROR)
    logging.basicConfig(level=logging.WARNING, format=LOG_FORMAT, stream=sys.stderr)  # other libraries' warnings
    ours = logging.getLogger("metabackup")
    if _OWN_HANDLER not in ours.handlers:
        ours.addHandler(_OWN_HANDLER)
    ours.setLevel(logging.INFO)
    ours.propagate = False
    logging.getLogger("hdfs").setLevel(logging.WARNING)  # the WebHDFS client narrates every call


def cmd_keys_generate(args: argparse.Namespace) -> int:
    """Print a new key: 32 random bytes in base64, for an Airflow connection's password or a key file."""
    from metabackup.keys import generate_key

    print(generate_key(), file=args.out)
    return 0


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    from metabackup.rotation import rotate

    spec = load_spec(args.spec)
    report = rotate(spec, args.new_key_id, old_key_id=args.old_key_id, sources=args.source or None)
    print(json.dumps(report, indent=2), file=args.out)
    print(f"every encrypted set of {spec.name} is now under key {args.new_key_id!r}. Next: set encryption.key_id: "
          f"{args.new_key_id} in {spec.path} (new sets still use the old key until then), then retire the old key",
          file=sys.stderr)
    return 0


def cmd_decrypt(args: argparse.Namespace) -> int:
    """Decrypt one ``.tar.gz.enc`` with a key file into a ``.tar.gz``, checking every chunk; OUT
    appears (0600) only when the whole file authenticated."""
    from metabackup.encryption import drain
    from metabackup.fsutil import atomic_writer
    from metabackup.keys import KeyRing
    from metabackup.manifest import Manifest
    from metabackup.naming import MANIFEST_SUFFIX, split_archive_name
    from metabackup.sealed import plain_reader

    source = Path(args.input)
    split = split_archive_name(source.name)
    manifest_path = Path(args.manifest) if args.manifest else source.with_name(
        (split[0] if split else source.name) + MANIFEST_SUFFIX)
    if not manifest_path.is_file():
        raise ValueError(f"{manifest_path} not found: the manifest beside the archive holds its wrapped data key; "
                         "give it with --manifest")
    manifest = Manifest.from_json(manifest_path.read_bytes(), origin=str(manifest_path))
    if manifest.encryption is None:
        raise ValueError(f"{manifest_path}: set {manifest.set} is not encrypted; its archive is not encrypted")
    if source.name != manifest.archive.name:
        raise ValueError(f"{source} is not {manifest.archive.name}, the archive {manifest_path} describes")
    reader = plain_reader(open(source, "rb"), manifest, KeyRing(), str(source), digest=True)
    with reader:
        if args.output == "-":
            drain(reader)
        else:
            with atomic_writer(args.output) as out:
                while block := reader.read(1 << 20):
                    out.write(block)
    print(f"{source}: every chunk authenticated, sha256 {manifest.encryption.plaintext_sha256} "
          f"({manifest.encryption.plaintext_size} bytes){'' if args.output == '-' else ' written to ' + args.output}",
          file=sys.stderr)
    return 0


def cmd_schema(args: argparse.Namespace) -> int:
    """Print the JSON Schema of a task spec file (for editors: the YAML language server)."""
    from metabackup.schema import spec_schema

    print(json.dumps(spec_schema(), indent=2), file=args.out)
    return 0


def key_file_option(parser: argparse.ArgumentParser, required: bool = False) -> None:
    parser.add_argument("--key-file", action="append", required=required, metavar="F",
                        help="a file (mode 0600) holding a key, used for the sets whose key fingerprint it matches "
                             "(repeatable); no Airflow connection is needed then")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m metabackup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("new-task", help="scaffold a task spec and its DAG file")
    p.add_argument("name")
    p.add_argument("--type", choices=["periodic", "manual"], default="periodic")
    p.add_argument("--spec-dir", default=DEFAULT_SPEC_DIR)
    p.add_argument("--dags-dir", default=DEFAULT_DAGS_DIR)
    p.set_defaults(func=cmd_new_task)
    p = sub.add_parser("validate", help="validate every task spec")
    p.add_argument("--spec-dir", default=None,
                   help=f"the spec folder (default: ${SPEC_DIR_ENV} when set, as for the DAGs, else {DEFAULT_SPEC_DIR})")
    p.set_defaults(func=cmd_validate)
    p = sub.add_parser("list", help="list a task's backup sets")
    p.add_argument("--spec", required=True)
    p.add_argument("--source")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)
    p = sub.add_parser("backup", help="back up a task's sources now, without a scheduler")
    p.add_argument("--spec", required=True)
    p.add_argument("--source", action="append", help="only this source (repeatable; default: all)")
    p.add_argument("--full", action="store_true", help="take full backups whatever the policy says")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("unlock", help="break the lease a dead run left on a source")
    p.add_argument("--spec", required=True)
    p.add_argument("--source", required=True)
    p.set_defaults(func=cmd_unlock)
    p = sub.add_parser("schema", help="print the JSON Schema of a task spec file (for editors)")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("restore", help="restore a source from its backup chain")
    p.add_argument("--spec", required=True)
    p.add_argument("--source", required=True)
    p.add_argument("--set", help="set name <version>_<source>_<time> (default: the latest restorable)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--dest",
                       help="files: a new directory; postgres: a new data directory; oms: a new folder (database/ and "
                            "files/ inside); namenode: a new name directory; ldap: the Airflow connection of an empty "
                            "server whose suffix holds the set's base DNs")
    where.add_argument("--in-place", action="store_true",
                       help="over the source's live data (its spec's service: block says how to stop, start and "
                            "check it): safety backup, rebuild beside, stop, swap, start, validate; rolled back on "
                            "failure")
    p.add_argument("--allow-version-mismatch", action="store_true",
                   help="with --in-place: restore a set taken at another cluster version")
    p.add_argument("--point-in-time", help="postgres: recover to this ISO-8601 time (with offset) instead of a set's end")
    p.add_argument("--port", type=int, default=0, help="postgres: port for the recovered server (default: a free one)")
    p.add_argument("--keep-running", action="store_true", help="postgres: leave the recovered server running")
    p.add_argument("--from-copy", type=int, metavar="N",
                   help="read the chain from the source's off-site copy N (1 = the first of its copies:); by "
                        "default from the first location where it is intact: primary, mirror, then the copies")
    p.add_argument("--from-dir", metavar="DIR",
                   help="read the chain from DIR only: a copy of the task's directory, or the folder holding it")
    key_file_option(p)
    p.set_defaults(func=cmd_restore)
    keys = sub.add_parser("keys", help="key-encryption keys: generate, rotate").add_subparsers(dest="keys_command",
                                                                                               required=True)
    p = keys.add_parser("generate", help="print a new key (32 random bytes, base64)")
    p.set_defaults(func=cmd_keys_generate)
    p = keys.add_parser("rotate", help="re-wrap every encrypted set's data key under a new key (archives unchanged)")
    p.add_argument("--spec", required=True)
    p.add_argument("--new-key-id", required=True, help="the new key: an Airflow connection id (or a key_id with a "
                                                       "key_command in the spec)")
    p.add_argument("--old-key-id", help="only the sets under this key (default: every set not under the new key)")
    p.add_argument("--source", action="append", help="only this source (repeatable; default: all)")
    key_file_option(p)
    p.set_defaults(func=cmd_keys_rotate)
    p = sub.add_parser("decrypt", help="decrypt one archive with a key file (no Airflow needed)")
    p.add_argument("input", metavar="IN", help="<set>.tar.gz.enc (or <set>.tar.zst.enc)")
    p.add_argument("output", metavar="OUT", help="the .tar.gz (or .tar.zst) to write, or - to check every chunk and "
                                                 "write nothing")
    p.add_argument("--manifest", help="the set's manifest (default: <set>.manifest.json beside IN)")
    key_file_option(p, required=True)
    p.set_defaults(func=cmd_decrypt)
    args = parser.parse_args(argv)
    quiet_airflow()
    args.out = sys.stdout
    try:
        if getattr(args, "key_file", None):
            from metabackup.keys import use_key_files

            use_key_files(args.key_file)
        with contextlib.redirect_stdout(sys.stderr):
            return args.func(args)
    except (SpecError, RuntimeError, ValueError, OSError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
