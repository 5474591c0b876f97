"""Throwaway OpenLDAP servers for tests, benchmarks and the demo (Debian's slapd, loopback only).

    PYTHONPATH=plugins:. python -m harness.slapd start DIR [--suffix DN] [--no-accesslog] [--seed] [--reuse]
        # prints a JSON with url, bind DN and suffix; DIR/airflow-connection.json (0600) is an
        # Airflow connection for it: AIRFLOW_CONN_<ID>="$(cat DIR/airflow-connection.json)".
        # --suffix: the database's suffix (default dc=hadoop,dc=com); the rootdn is cn=admin,<suffix>
    PYTHONPATH=plugins:. python -m harness.slapd stop DIR
    python harness/slapd.py service-stop|service-start|service-status DIR [--timeout S]

``service-stop`` ends the instance's slapd (SIGTERM, waiting until it is gone), ``service-start``
runs it again with the same command line and ``slapd.conf`` (same port, same mdb directories) and
waits until it answers an anonymous base search of the root DSE, ``service-status`` exits 0 when
it runs and answers, 3 when it is not running, 1 on other errors; the data stays.
:func:`service_argv` gives them as argv lists for a backup spec's ``service:``.

A generated ``slapd.conf`` with the mdb backend, the accesslog overlay (optional) writing to
``cn=accesslog``, syncprov and ppolicy, and a readable ``cn=config``; a free port on 127.0.0.1;
readiness detected by connecting, not by sleeping.  Built on the product's own scratch server
(:mod:`metabackup.scratch_slapd`: config sections, start and wait); this adds what tests need
(accesslog, syncprov, TLS, ``stop DIR`` from another process, seeds).
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

if __name__ == "__main__" and __spec__ is None:  # run as a script (service_argv): import from the repository root
    _ROOT = Path(__file__).resolve().parents[1]
    sys.path[:] = [str(_ROOT), str(_ROOT / "plugins"),
                   *(entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT / "harness")]

from harness import (  # noqa: E402
    CONNECTION_FILE, NOT_RUNNING, RUNNING, SERVICE_COMMANDS, STATUS_ERROR, ServiceError, command_line_parser,
    end_process, free_port, log_tail, os_user_name, process_alive, reusable, run_service_command, service_argv_for,
    write_private_json,
)
from metabackup.fsutil import write_private  # noqa: E402
from metabackup.scratch_slapd import check_suffix, global_section, launch, mdb_database, ssha  # noqa: E402

SUFFIX = "dc=hadoop,dc=com"
ADMIN_DN = f"cn=admin,{SUFFIX}"
ACCESSLOG_ADMIN_DN = "cn=accesslog-admin,cn=accesslog"  # can purge the log in tests
CONFIG_ADMIN_DN = "cn=admin,cn=config"
MODULES = ("back_mdb", "accesslog", "syncprov", "ppolicy")
DEFAULT_PASSWORD = "metabackup-admin-pw"


@dataclass
class SlapdInstance:
    directory: str
    port: int
    suffix: str
    admin_dn: str
    password: str
    accesslog: bool
    pid: int = 0
    tls_port: int = 0  # ldaps:// listener when prepared with tls=True (StartTLS works on ``port`` then too)
    # for an in-place restore (filled in when missing from an older instance.json):
    db_dir: str = ""  # the suffix's mdb directory (data.mdb)
    accesslog_dir: str = ""  # cn=accesslog's mdb directory ("" without the accesslog)
    config_file: str = ""  # slapd.conf (slapd -f)
    os_user: str = ""  # slapd runs as the user who starts it (no -u) and owns the mdb files

    def __post_init__(self):
        self.db_dir = self.db_dir or str(Path(self.directory) / "data")
        self.accesslog_dir = self.accesslog_dir or (str(Path(self.directory) / "accesslog") if self.accesslog else "")
        self.config_file = self.config_file or str(Path(self.directory) / "slapd.conf")
        self.os_user = self.os_user or os_user_name()

    @property
    def url(self) -> str:
        return f"ldap://127.0.0.1:{self.port}"

    @property
    def ldaps_url(self) -> str:
        return f"ldaps://127.0.0.1:{self.tls_port}"

    @property
    def ca_file(self) -> str:
        return str(Path(self.directory) / "ca.pem")

    @property
    def conf(self) -> Path:
        return Path(self.directory) / "slapd.conf"

    def connection_uri(self) -> str:
        """An Airflow connection (JSON form) for this server."""
        return json.dumps({"conn_type": "ldap", "host": "127.0.0.1", "port": self.port, "login": self.admin_dn,
                           "password": self.password, "extra": {"scheme": "ldap"}})

    def stop(self) -> None:
        stop(self.directory)


def make_certificates(directory: Path) -> str:
    """A throwaway CA and a server certificate for 127.0.0.1/localhost (openssl); the slapd.conf lines."""
    def run(*args: str) -> None:
        result = subprocess.run(["openssl", *args], cwd=directory, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"openssl {args[0]} failed: {result.stderr.strip()}")

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=metabackup throwaway CA")
    run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "san.cnf")
    for name in ("ca.key", "server.key"):
        os.chmod(directory / name, 0o600)
    return (f"TLSCACertificateFile {directory}/ca.pem\nTLSCertificateFile {directory}/server.pem\n"
            f"TLSCertificateKeyFile {directory}/server.key\n")


def write_config(directory: Path, port: int, password: str, accesslog: bool, tls: str = "",
                 suffix: str = SUFFIX) -> Path:
    admin_dn = f"cn=admin,{suffix}"
    hashed = ssha(password)
    overlays = ""
    accesslog_db = ""
    if accesslog:
        accesslog_db = f"""
database mdb
suffix "cn=accesslog"
directory {directory}/accesslog
rootdn "{ACCESSLOG_ADMIN_DN}"
rootpw {hashed}
index reqStart,reqEnd eq
access to * by dn.exact="{admin_dn}" read by * none
"""
        overlays = """
overlay accesslog
logdb cn=accesslog
logops writes
logsuccess TRUE
logoldattr userPassword
logpurge 07+00:00 01+00:00
"""
    conf = f"""# generated by harness.slapd
{global_section(directory, MODULES, tls)}
database config
rootdn "{CONFIG_ADMIN_DN}"
rootpw {hashed}
access to * by dn.exact="{admin_dn}" read by * none
{accesslog_db}
{mdb_database(directory, suffix, hashed)}index objectClass,entryUUID,entryCSN eq
index uid,cn,memberUid eq
limits dn.exact="{admin_dn}" size=unlimited time=unlimited
access to attrs=userPassword by self write by anonymous auth by * none
access to * by self read by users read by * none
overlay syncprov
syncprov-checkpoint 100 10
{overlays}overlay ppolicy
ppolicy_default "cn=default,ou=policies,{suffix}"
"""
    path = directory / "slapd.conf"
    write_private(path, conf)
    return path


def prepare(directory: str | Path, accesslog: bool = True, password: str = DEFAULT_PASSWORD,
            tls: bool = False, suffix: str = SUFFIX) -> SlapdInstance:
    """Create a fresh, empty, stopped instance (config and database directories) serving
    ``suffix`` (rootdn ``cn=admin,<suffix>``)."""
    check_suffix(suffix)
    directory = Path(directory).resolve()
    if (directory / "slapd.pid").exists():
        stop(directory)
    shutil.rmtree(directory, ignore_errors=True)
    for sub in ("data", "accesslog"):
        (directory / sub).mkdir(parents=True, mode=0o700)
    port = free_port()
    tls_port = free_port() if tls else 0
    write_config(directory, port, password, accesslog, make_certificates(directory) if tls else "", suffix)
    check = subprocess.run(["slaptest", "-Q", "-u", "-f", str(directory / "slapd.conf")], capture_output=True, text=True)
    if check.returncode != 0:
        raise RuntimeError(f"slaptest rejected the generated config: {check.stderr.strip()}")
    instance = SlapdInstance(str(directory), port, suffix, f"cn=admin,{suffix}", password, accesslog, tls_port=tls_port)
    (directory / "instance.json").write_text(json.dumps(asdict(instance)))
    return instance


def start(instance: SlapdInstance, timeout: float = 20) -> SlapdInstance:
    """Run the prepared instance (:func:`metabackup.scratch_slapd.launch`) and record its pid."""
    urls = instance.url + "/" + (f" {instance.ldaps_url}/" if instance.tls_port else "")
    instance.pid = launch(instance.conf, instance.port, urls, timeout).pid
    (Path(instance.directory) / "instance.json").write_text(json.dumps(asdict(instance)))
    return instance


def stop(directory: str | Path, timeout: float = 20) -> None:
    pidfile = Path(directory) / "slapd.pid"
    if not pidfile.exists():
        return
    pid = int(pidfile.read_text().split()[0])
    if not process_alive(pid):
        pidfile.unlink(missing_ok=True)
        return
    end_process(pid, timeout)


def load(directory: str | Path) -> SlapdInstance:
    return SlapdInstance(**json.loads((Path(directory) / "instance.json").read_text()))


def service_argv(directory: str | Path) -> dict[str, list[str]]:
    """``{"stop": [...], "start": [...], "status": [...]}``: ``[sys.executable, <repo>/harness/slapd.py,
    "service-stop", DIR]`` etc., independent of the child's cwd and PYTHONPATH."""
    return service_argv_for(__file__, directory)


def service_paths(directory: str | Path) -> dict[str, str]:
    """What an in-place restore swaps: the mdb directories, the config file and their owner."""
    instance = load(directory)
    return {"db_dir": instance.db_dir, "accesslog_dir": instance.accesslog_dir, "config_file": instance.config_file,
            "os_user": instance.os_user}


def _running_pid(instance: SlapdInstance) -> int:
    """The pid of this instance's slapd (its pid file, else the recorded pid) when it runs, else 0."""
    candidates = []
    pidfile = Path(instance.directory) / "slapd.pid"
    try:
        candidates.append(int(pidfile.read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        pass
    candidates.append(instance.pid)
    for pid in candidates:
        if not process_alive(pid):
            continue
        try:
            command_line = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if command_line and command_line[0].endswith(b"slapd") and str(instance.conf).encode() in command_line:
            return pid
    return 0


def _answers(instance: SlapdInstance, timeout: float = 5) -> str | None:
    """None when an anonymous base search of the root DSE succeeds, else the error."""
    import ldap

    try:
        conn = ldap.initialize(instance.url)
        conn.set_option(ldap.OPT_NETWORK_TIMEOUT, timeout)
        conn.set_option(ldap.OPT_TIMEOUT, timeout)
        conn.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
        conn.unbind_s()
        return None
    except ldap.LDAPError as exc:
        return str(exc)


def service_status(directory: str | Path, args=None) -> tuple[int, str]:
    instance = load(directory)
    pid = _running_pid(instance)
    if not pid:
        return NOT_RUNNING, f"slapd is not running ({instance.config_file})"
    error = _answers(instance)
    if error is not None:
        return STATUS_ERROR, f"slapd (pid {pid}) runs but does not answer on {instance.url}: {error}"
    return RUNNING, f"slapd is running (pid {pid}) and answering on {instance.url}"


def service_stop(directory: str | Path, args=None) -> str:
    """End the instance's slapd (SIGTERM, SIGKILL after the timeout) and wait until it is gone."""
    instance = load(directory)
    timeout = getattr(args, "timeout", None) or 30
    pid = _running_pid(instance)
    if not pid:
        return f"slapd was not running ({instance.config_file})"
    end_process(pid, timeout)
    if process_alive(pid):
        raise ServiceError(f"slapd (pid {pid}) did not end\n{log_tail(Path(instance.directory) / 'slapd.log')}")
    return f"slapd stopped (pid {pid})"


def service_start(directory: str | Path, args=None) -> str:
    """Run slapd again as :func:`start` does (same command line, ``slapd.conf``, port and data);
    wait until it answers an anonymous base search."""
    import time

    instance = load(directory)
    timeout = getattr(args, "timeout", None) or 30
    if _running_pid(instance) and _answers(instance) is None:
        return f"slapd was already running on {instance.url}"
    log = Path(instance.directory) / "slapd.log"
    try:
        start(instance, timeout)
    except Exception as exc:  # noqa: BLE001 - ScratchServerError carries the log's tail already
        # slapd -d 0 sends config errors to syslog, not its log: slaptest says what is wrong
        check = subprocess.run(["slaptest", "-u", "-f", instance.config_file], capture_output=True, text=True)
        raise ServiceError(f"slapd did not start: {exc}\nslaptest -u -f {instance.config_file}: exit "
                           f"{check.returncode}: {(check.stdout + check.stderr).strip()[-1500:]}") from None
    deadline = time.monotonic() + timeout
    while (error := _answers(instance)) is not None:
        if time.monotonic() > deadline:
            raise ServiceError(f"slapd (pid {instance.pid}) does not answer on {instance.url}: {error}\n{log_tail(log)}")
        time.sleep(0.1)
    return f"slapd is running (pid {instance.pid}) on {instance.url}"


def seed_ldif(users: int = 20, groups: int = 5, suffix: str = SUFFIX) -> str:
    """A realistic cluster DIT under ``suffix`` (a ``dc=`` DN): people, groups with memberships,
    a password policy, principals."""
    import ldap.dn

    top = ldap.dn.str2dn(check_suffix(suffix))[0]
    if len(top) != 1 or top[0][0].lower() != "dc":
        raise ValueError(f"the seed needs a suffix whose first RDN is dc=...; got {suffix!r}")
    dc = top[0][1]
    out = [f"""dn: {suffix}
objectClass: top
objectClass: dcObject
objectClass: organization
o: {dc}
dc: {dc}
"""]
    for ou in ("People", "Groups", "policies", "Services"):
        out.append(f"dn: ou={ou},{suffix}\nobjectClass: organizationalUnit\nou: {ou}\n")
    out.append(f"""dn: cn=default,ou=policies,{suffix}
objectClass: person
objectClass: pwdPolicy
cn: default
sn: policy
pwdAttribute: userPassword
pwdMinLength: 8
pwdMaxFailure: 5
pwdLockout: TRUE
pwdInHistory: 3
""")
    for i in range(users):
        out.append(f"""dn: uid=user{i:05d},ou=People,{suffix}
objectClass: inetOrgPerson
objectClass: posixAccount
objectClass: shadowAccount
uid: user{i:05d}
cn: User {i}
sn: Number{i}
givenName: User
mail: user{i:05d}@hadoop.example
uidNumber: {10000 + i}
gidNumber: {20000 + i % max(groups, 1)}
homeDirectory: /home/user{i:05d}
loginShell: /bin/bash
userPassword: {ssha(f"password-{i}")}
""" + (f"jpegPhoto:: {base64.b64encode(os.urandom(64)).decode()}\n" if i % 7 == 0 else ""))
    for g in range(groups):
        members = "".join(f"memberUid: user{i:05d}\n" for i in range(users) if i % max(groups, 1) == g)
        out.append(f"dn: cn=group{g},ou=Groups,{suffix}\nobjectClass: posixGroup\ncn: group{g}\ngidNumber: {20000 + g}\n{members}")
    for service in ("hdfs", "yarn", "hive"):  # service principals, with a binary key
        out.append(f"""dn: uid={service},ou=Services,{suffix}
objectClass: account
objectClass: simpleSecurityObject
uid: {service}
description: {service}/hadoop@HADOOP.COM
userPassword: {ssha(service + "-keytab")}
""")
    return "\n".join(out)


def seed_offline(instance: SlapdInstance, ldif_text: str) -> None:
    """Load LDIF with slapadd into a stopped instance (fast path for large seeds)."""
    result = subprocess.run(["slapadd", "-q", "-f", str(instance.conf), "-b", instance.suffix],
                            input=ldif_text, capture_output=True, text=True)
    if result.returncode != 0:
        raise RuntimeError(f"slapadd failed: {result.stderr.strip()[-2000:]}")


def main(argv: list[str] | None = None) -> int:
    parser, start_options = command_line_parser("python -m harness.slapd", service=True)
    start_options.add_argument("--suffix", default=None,
                               help=f"the directory's suffix (default {SUFFIX}); its rootdn is cn=admin,<suffix>")
    start_options.add_argument("--no-accesslog", action="store_true")
    start_options.add_argument("--seed", action="store_true", help="load the demo cluster DIT (under the suffix)")
    args = parser.parse_args(argv)
    if args.command in SERVICE_COMMANDS:
        return run_service_command(args, service_stop, service_start, service_status)
    if args.command == "stop":
        stop(args.directory)
        return 0
    try:
        suffix = check_suffix(args.suffix or SUFFIX)
        if reusable(args.directory, args.reuse):
            instance = load(args.directory)
            if args.suffix is not None and args.suffix.lower() != instance.suffix.lower():
                raise ValueError(f"{instance.directory} serves {instance.suffix}, not {args.suffix}; "
                                 "start without --reuse for a new server")
            stop(instance.directory)
        else:
            seed = seed_ldif(suffix=suffix) if args.seed else None  # checks the suffix before anything is made
            instance = prepare(args.directory, accesslog=not args.no_accesslog, suffix=suffix)
            if seed is not None:
                seed_offline(instance, seed)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    start(instance)
    conn_file = write_private_json(Path(instance.directory) / CONNECTION_FILE, json.loads(instance.connection_uri()))
    print(json.dumps({"url": instance.url, "bind_dn": instance.admin_dn, "suffix": instance.suffix,
                      "pid": instance.pid, "directory": instance.directory, "airflow_connection_file": str(conn_file)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
