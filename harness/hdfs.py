"""A real HDFS on loopback (Hadoop 3.4 minicluster from Maven Central) for tests, benchmarks, demo.

``make hadoop`` (or :func:`build_jars`) fetches the jars into ``build/hadoop/lib`` and builds
``build/hadoop/metabackup-hdfs.jar`` from ``hadoop/``: the launcher ``HdfsCluster`` and
``NameNodeTool`` (the NameNode source's RPC helper).  Modes:

* ``single`` - one NameNode, one DataNode, WebHDFS on;
* ``ha`` - a NameService (``hacluster`` unless ``nameservice`` names another, e.g. a second pair
  ``haclusterX`` beside the first on other ports): NameNodes ``nn1`` (active) and ``nn2``
  (standby), one DataNode;
* ``namenode`` - only a NameNode on an existing (restored) name directory.

Each instance directory gets ``instance.json``, Hadoop client config in ``conf/``, ``bin/hdfs``
(``dfs``, ``dfsadmin``, ``haadmin``, ``oiv``), ``bin/namenode-tool`` (NameNodeTool with this
cluster's config) and ``bin/hadoop`` (``hadoop CLASSNAME ...``), and ``airflow-connection.json`` (the WebHDFS connection, 0600).  The running
launcher takes commands on a loopback control port (:func:`command`).

    python harness/hdfs.py service-stop|service-start|service-status DIR [--nn ID] [--timeout S]

act on the NameNode(s) of a running instance (all, or ``--nn nn1``), keeping the DataNode and the
data: ``stop-nn ID`` / ``restart-nn ID`` on the control channel (a restart loads the name
directories from disk as they are then, formatting nothing), status exits 0 when the NameNode
answers (JMX over HTTP and its RPC port), 3 when it is not running, 1 on other errors.
:func:`service_argv` gives them as argv lists for a backup spec's ``service:``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

if __name__ == "__main__" and __spec__ is None:  # run as a script (service_argv): import from the repository root
    _ROOT = Path(__file__).resolve().parents[1]  # (and not harness/, whose hdfs.py would shadow the hdfs package)
    sys.path[:] = [str(_ROOT), str(_ROOT / "plugins"),
                   *(entry for entry in sys.path if Path(entry or ".").resolve() != _ROOT / "harness")]

from harness import (  # noqa: E402
    CONNECTION_FILE, NOT_RUNNING, RUNNING, SERVICE_COMMANDS, STATUS_ERROR, ServiceError, command_line_parser,
    free_ports, log_tail, os_user_name, process_alive, reusable, run_service_command, service_argv_for,
    write_private_json,
)

REPO = Path(__file__).resolve().parents[1]  # harness/ is at the repository root
BUILD = REPO / "build" / "hadoop"
JAR = BUILD / "metabackup-hdfs.jar"
LIB = BUILD / "lib"
# What Hadoop 3.4's own scripts open up on Java 17 (hadoop-env / HADOOP_OPTS), plus -Xmx for tests.
JAVA_OPTIONS = [
    "-Xmx512m", "-XX:+UseSerialGC", "-Djava.net.preferIPv4Stack=true",
    *(f"--add-opens=java.base/{p}=ALL-UNNAMED" for p in (
        "java.lang", "java.lang.reflect", "java.io", "java.net", "java.nio", "java.util", "java.util.concurrent",
        "java.util.concurrent.atomic", "java.util.regex", "java.util.zip", "sun.nio.ch", "sun.nio.cs",
        "sun.net.dns", "sun.net.util", "sun.security.x509", "sun.security.util")),
    "--add-opens=java.security.jgss/sun.security.krb5=ALL-UNNAMED",
]
DEFAULT_NAMESERVICE = "hacluster"
NAMESERVICE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9.\-]{0,63}")  # as metabackup.fields.NameService
TOOLS = {
    "dfs": "org.apache.hadoop.fs.FsShell",
    "dfsadmin": "org.apache.hadoop.hdfs.tools.DFSAdmin",
    "haadmin": "org.apache.hadoop.hdfs.tools.DFSHAAdmin",
    "oiv": "org.apache.hadoop.hdfs.tools.offlineImageViewer.OfflineImageViewerPB",
}


@dataclass
class NameNodeInfo:
    id: str
    rpc_port: int
    http_port: int
    name_dirs: list[str] = field(default_factory=list)


@dataclass
class HdfsInstance:
    directory: str
    mode: str
    control_port: int
    namenodes: list[NameNodeInfo]
    nameservice: str | None = None
    active: str = "nn1"
    pid: int = 0
    # for an in-place restore (filled in when missing from an older instance.json); each
    # NameNode's name directories are in namenodes[].name_dirs
    os_user: str = ""  # the launcher (NameNodes, DataNode) runs as the user who started it, owning the dirs
    shared_edits_dir: str = ""  # ha: the NameNodes' shared edits directory

    def __post_init__(self):
        self.namenodes = [n if isinstance(n, NameNodeInfo) else NameNodeInfo(**n) for n in self.namenodes]
        self.os_user = self.os_user or os_user_name()
        if self.mode == "ha" and not self.shared_edits_dir:
            shared = sorted((Path(self.directory) / "data").glob("shared-edits-*"))
            self.shared_edits_dir = str(shared[0]) if shared else ""

    def namenode(self, nn_id: str | None = None) -> NameNodeInfo:
        wanted = nn_id or self.active
        return next(n for n in self.namenodes if n.id == wanted)

    def webhdfs_url(self, nn_id: str | None = None) -> str:
        return f"http://127.0.0.1:{self.namenode(nn_id).http_port}"

    def hosts(self) -> str:
        """NameNode HTTP addresses for a WebHDFS connection's host field, nn1 first."""
        return ",".join(f"127.0.0.1:{n.http_port}" for n in self.namenodes)

    @property
    def fs_uri(self) -> str:
        return f"hdfs://{self.nameservice}" if self.nameservice else f"hdfs://127.0.0.1:{self.namenodes[0].rpc_port}"

    def airflow_connection(self, login: str | None = None) -> dict[str, Any]:
        """A ``webhdfs`` connection for :class:`~metabackup.airflow.hooks.NameServiceWebHDFSHook`."""
        return {"conn_type": "webhdfs", "host": self.hosts(), "login": login or _os_user()}

    def connection_uri(self) -> str:
        return json.dumps(self.airflow_connection())

    @property
    def conf_dir(self) -> Path:
        return Path(self.directory) / "conf"

    def hdfs_command(self) -> str:
        return str(Path(self.directory) / "bin" / "hdfs")

    def namenode_tool_command(self) -> str:
        """The ``tool_command`` of a ``namenode`` source for this cluster."""
        return str(Path(self.directory) / "bin" / "namenode-tool")

    def stop(self) -> None:
        stop(self.directory)


def _os_user() -> str:
    import getpass

    return getpass.getuser()


def classpath(*extra: str | Path) -> str:
    return os.pathsep.join([*(str(e) for e in extra), str(JAR), str(LIB / "*")])


def build_jars(force: bool = False) -> None:
    """Fetch the Hadoop jars and build ours (Maven), unless already there."""
    if not force and JAR.exists() and LIB.is_dir() and any(LIB.glob("hadoop-client-minicluster-*.jar")):
        return
    for tool in ("mvn", "java"):
        if shutil.which(tool) is None:
            raise RuntimeError(f"{tool} is not installed; `make setup` installs a JDK and Maven from Debian")
    done = subprocess.run(["mvn", "-q", "-B", "-f", str(REPO / "hadoop" / "pom.xml"), "package"],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the HDFS harness failed:\n{(done.stdout + done.stderr)[-3000:]}")


def _write_scripts(directory: Path) -> None:
    bin_dir = directory / "bin"
    bin_dir.mkdir(exist_ok=True)
    java = " ".join(["java", *JAVA_OPTIONS[3:]])  # no -Xmx512m for clients
    cp = classpath(directory / "conf")
    cases = "\n".join(f"  {name}) shift; exec {java} -cp '{cp}' {cls} \"$@\" ;;" for name, cls in TOOLS.items())
    (bin_dir / "hdfs").write_text(f"""#!/bin/sh
# generated by harness.hdfs: a minimal `hdfs` command for this test cluster
case "$1" in
{cases}
  *) echo "usage: hdfs {'|'.join(TOOLS)} ..." >&2; exit 2 ;;
esac
""")
    (bin_dir / "namenode-tool").write_text(
        f"#!/bin/sh\nexec {java} -cp '{cp}' metabackup.hdfs.NameNodeTool \"$@\"\n")
    # `hadoop CLASSNAME args`, as Hadoop's own script runs a class: the namenode kind's default
    # tool_command works with this directory's bin/ on PATH
    (bin_dir / "hadoop").write_text(f"#!/bin/sh\nexec {java} -cp '{cp}' \"$@\"\n")
    for script in ("hdfs", "namenode-tool", "hadoop"):
        (bin_dir / script).chmod(0o755)


def _launch(directory: Path, mode: str, extra: list[str], timeout: float,
            nameservice: str | None = None) -> HdfsInstance:
    build_jars()
    directory.mkdir(parents=True, exist_ok=True)
    ready = directory / "ready.json"
    ready.unlink(missing_ok=True)
    # the control port and each NameNode's RPC and HTTP ports, all different
    control, *ports = free_ports(5 if mode == "ha" else 3)
    log = open(directory / "launcher.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen(
        ["java", *JAVA_OPTIONS, "-cp", classpath(), "metabackup.hdfs.HdfsCluster", mode, str(directory), str(ready),
         str(control), *map(str, ports), *extra],
        stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True, cwd=directory)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the HDFS launcher exited with {proc.returncode}:\n{log_tail(directory / 'launcher.log')}")
        if ready.exists():
            info = json.loads(ready.read_text())
            if info["nameservice"] != nameservice:  # a jar built before the NAMESERVICE argument
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                raise RuntimeError(f"the HDFS launcher started NameService {info['nameservice']!r}, not {nameservice!r}: "
                                   f"{JAR} predates the NAMESERVICE argument; rebuild it with `make hadoop`")
            instance = HdfsInstance(directory=str(directory), mode=mode, control_port=control,
                                    namenodes=info["namenodes"], nameservice=info["nameservice"],
                                    active=info["active"], pid=proc.pid)
            if _webhdfs_answers(instance):
                _write_scripts(directory)
                _save(instance)
                write_private_json(directory / CONNECTION_FILE, instance.airflow_connection())
                return instance
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    raise RuntimeError(f"HDFS ({mode}) was not serving within {timeout}s:\n{log_tail(directory / 'launcher.log')}")


def _webhdfs_answers(instance: HdfsInstance) -> bool:
    url = f"{instance.webhdfs_url()}/webhdfs/v1/?op=GETFILESTATUS&user.name={_os_user()}"
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status == 200
    except OSError:
        return False


def _save(instance: HdfsInstance) -> None:
    (Path(instance.directory) / "instance.json").write_text(json.dumps(asdict(instance)))


def load(directory: str | Path) -> HdfsInstance:
    return HdfsInstance(**json.loads((Path(directory) / "instance.json").read_text()))


def start(directory: str | Path, mode: str = "single", reuse: bool = False, timeout: float = 120,
          nameservice: str = DEFAULT_NAMESERVICE) -> HdfsInstance:
    """Start a cluster in ``directory`` (fresh, or with ``reuse`` its existing data, single mode).

    ``nameservice`` names the HA pair's NameService (mode ``ha``; a single NameNode has none): two
    pairs with different names run side by side, each on free ports of its own.
    """
    directory = Path(directory).resolve()
    if mode not in ("single", "ha"):
        raise ValueError(f"mode must be single or ha, not {mode!r}")
    if not NAMESERVICE_NAME.fullmatch(nameservice):
        raise ValueError(f"{nameservice!r} is not a valid NameService name")
    if mode != "ha" and nameservice != DEFAULT_NAMESERVICE:
        raise ValueError(f"a NameService name ({nameservice!r}) needs mode ha; a single NameNode has none")
    if (directory / "instance.json").exists():
        stop(directory)
    if not reuse:
        shutil.rmtree(directory, ignore_errors=True)
    if mode == "ha":  # HdfsCluster's optional NAMESERVICE argument after the ports
        return _launch(directory, mode, [nameservice], timeout, nameservice)
    return _launch(directory, mode, [], timeout)


def start_namenode_on(name_dir: str | Path, directory: str | Path, timeout: float = 120) -> HdfsInstance:
    """A NameNode alone, without formatting, on an existing name directory (e.g. a restored one)."""
    directory = Path(directory).resolve()
    return _launch(directory, "namenode", [str(Path(name_dir).resolve())], timeout)


def command(instance: HdfsInstance, line: str, timeout: float = 120) -> str:
    with socket.create_connection(("127.0.0.1", instance.control_port), timeout=timeout) as sock:
        sock.sendall(line.encode() + b"\n")
        reply = sock.makefile().readline().strip()
    if not reply.startswith("ok"):
        raise RuntimeError(f"HDFS launcher: {line!r} -> {reply or 'no reply'}")
    return reply[3:]


def failover(instance: HdfsInstance, to_id: str) -> None:
    command(instance, f"failover {instance.active} {to_id}")
    instance.active = to_id
    _save(instance)


def stop_namenode(instance: HdfsInstance, nn_id: str) -> None:
    command(instance, f"stop-nn {nn_id}")


def restart_namenode(instance: HdfsInstance, nn_id: str, timeout: float = 60) -> None:
    """Restart a NameNode; return once a WebHDFS write goes through again (the DataNode has
    re-registered and dropped its connection to the old NameNode process)."""
    command(instance, f"restart-nn {nn_id}")
    probe = f"{instance.webhdfs_url()}/webhdfs/v1/.harness-probe?user.name={_os_user()}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            create = urllib.request.Request(f"{probe}&op=CREATE&overwrite=true", method="PUT")
            opener = urllib.request.build_opener(_NoRedirect)
            try:
                opener.open(create, timeout=10)
            except urllib.error.HTTPError as redirect:
                if redirect.code != 307:
                    raise
                urllib.request.urlopen(urllib.request.Request(redirect.headers["Location"], data=b"", method="PUT"),
                                       timeout=10)
            urllib.request.urlopen(urllib.request.Request(f"{probe}&op=DELETE", method="DELETE"), timeout=10)
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args, **kwargs):
        return None


def roll_edits(instance: HdfsInstance) -> int:
    return int(command(instance, "roll-edits").split()[-1])


def stop(directory: str | Path, timeout: float = 30) -> None:
    path = Path(directory) / "instance.json"
    if not path.exists():
        return
    instance = load(directory)
    try:
        command(instance, "shutdown", timeout=timeout)
    except OSError:
        pass
    except RuntimeError:
        pass
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process_alive(instance.pid):
        time.sleep(0.05)
    if process_alive(instance.pid):
        try:
            os.killpg(instance.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process_alive(instance.pid)
    path.unlink(missing_ok=True)


def service_argv(directory: str | Path, nn: str | None = None) -> dict[str, list[str]]:
    """``{"stop": [...], "start": [...], "status": [...]}``: ``[sys.executable, <repo>/harness/hdfs.py,
    "service-stop", DIR]`` (``+ ["--nn", nn]``) etc., independent of the child's cwd and PYTHONPATH."""
    return service_argv_for(__file__, directory, *(["--nn", nn] if nn else []))


def service_paths(directory: str | Path) -> dict[str, Any]:
    """What an in-place restore swaps: each NameNode's name directories, and their owner."""
    instance = load(directory)
    return {"name_dirs": {n.id: list(n.name_dirs) for n in instance.namenodes},
            "shared_edits_dir": instance.shared_edits_dir, "os_user": instance.os_user}


def _targets(instance: HdfsInstance, nn: str | None) -> list[NameNodeInfo]:
    """The NameNode ``nn``, or all of them, the active one first."""
    if nn:
        if nn not in {n.id for n in instance.namenodes}:
            raise ServiceError(f"{instance.directory} has no NameNode {nn!r} "
                               f"(it has {', '.join(n.id for n in instance.namenodes)})")
        return [instance.namenode(nn)]
    return sorted(instance.namenodes, key=lambda n: n.id != instance.active)


def _probe(info: NameNodeInfo, timeout: float = 20) -> tuple[str, str]:
    """("up", "active"/"standby") when the NameNode's WebHDFS answers (a standby with its
    StandbyException) and its RPC port accepts a connection; ("down", "") when neither does;
    ("error", why) otherwise.  (Not JMX: the NameNodes of one launcher share one MBean server.)"""
    url = f"http://127.0.0.1:{info.http_port}/webhdfs/v1/?op=GETFILESTATUS&user.name={_os_user()}"
    http, http_error = None, ""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            http = "active" if response.status == 200 else None
            http_error = "" if http else f"HTTP {response.status}"
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        http, http_error = ("standby", "") if "StandbyException" in body else (None, f"HTTP {exc.code}: {body[:200]}")
    except OSError as exc:
        http_error = str(getattr(exc, "reason", exc))
    with socket.socket() as sock:
        sock.settimeout(timeout)
        rpc = sock.connect_ex(("127.0.0.1", info.rpc_port)) == 0
    if http is not None and rpc:
        return "up", http
    if http is None and not rpc and ("refused" in http_error.lower() or "Errno 111" in http_error):
        return "down", ""
    return "error", f"WebHDFS {http or http_error}, RPC port {info.rpc_port} {'open' if rpc else 'closed'}"


def _launcher_running(instance: HdfsInstance) -> bool:
    return process_alive(instance.pid)


def service_status(directory: str | Path, args=None) -> tuple[int, str]:
    instance = load(directory)
    targets = _targets(instance, getattr(args, "nn", None))
    if not _launcher_running(instance):
        return NOT_RUNNING, f"NameNode {', '.join(n.id for n in targets)} not running (the HDFS launcher, pid " \
                            f"{instance.pid}, is not running)"
    results = {n.id: _probe(n) for n in targets}
    words = [f"{nn_id} {'running (' + why + ')' if state == 'up' else 'not running' if state == 'down' else why}"
             for nn_id, (state, why) in results.items()]
    states = {state for state, _ in results.values()}
    if states == {"up"}:
        return RUNNING, "NameNode " + "; ".join(words)
    if states == {"down"}:
        return NOT_RUNNING, "NameNode " + "; ".join(words)
    return STATUS_ERROR, "NameNode " + "; ".join(words)


def service_stop(directory: str | Path, args=None) -> str:
    """``stop-nn`` each chosen NameNode; wait until its ports are closed.  The DataNode runs on."""
    instance = load(directory)
    timeout = getattr(args, "timeout", None) or 60
    targets = _targets(instance, getattr(args, "nn", None))
    if not _launcher_running(instance):
        return f"NameNode {', '.join(n.id for n in targets)} was not running (the HDFS launcher is not running)"
    done = []
    for info in targets:
        if _probe(info)[0] == "down":
            done.append(f"{info.id} was not running")
            continue
        try:
            command(instance, f"stop-nn {info.id}", timeout=timeout)
        except (OSError, RuntimeError) as exc:
            raise ServiceError(f"stopping NameNode {info.id} failed: {exc}\n"
                               f"{log_tail(Path(instance.directory) / 'launcher.log')}") from None
        deadline = time.monotonic() + timeout
        while (state := _probe(info, timeout=2))[0] != "down":
            if time.monotonic() > deadline:
                raise ServiceError(f"NameNode {info.id} still answers after stop-nn: {state}")
            time.sleep(0.1)
        done.append(f"{info.id} stopped")
    return "NameNode " + "; ".join(done)


def service_start(directory: str | Path, args=None) -> str:
    """``restart-nn`` each chosen NameNode (the active one first): a NameNode on the same ports and
    configuration that loads its name directories from disk as they are now (nothing formatted);
    wait until it answers (WebHDFS, as the active one or a standby, and RPC)."""
    instance = load(directory)
    timeout = getattr(args, "timeout", None) or 180
    targets = _targets(instance, getattr(args, "nn", None))
    launcher_log = Path(instance.directory) / "launcher.log"
    if not _launcher_running(instance):
        raise ServiceError(f"the HDFS launcher (pid {instance.pid}) of {instance.directory} is not running, and a "
                           f"NameNode starts only inside it; `python -m harness.hdfs start {instance.directory} "
                           f"--reuse` starts a new cluster on the data\n{log_tail(launcher_log)}")
    done = []
    for info in targets:
        if _probe(info)[0] == "up":
            done.append(f"{info.id} was already running")
            continue
        try:
            reply = command(instance, f"restart-nn {info.id}", timeout=timeout)
        except (OSError, RuntimeError) as exc:
            raise ServiceError(f"starting NameNode {info.id} failed: {exc}\n{log_tail(launcher_log)}") from None
        deadline = time.monotonic() + timeout
        while True:
            state, why = _probe(info)
            if state == "up":
                break
            if time.monotonic() > deadline:
                raise ServiceError(f"NameNode {info.id} does not answer after restart-nn ({reply}): "
                                   f"{why or state}\n{log_tail(launcher_log)}")
            time.sleep(0.2)
        done.append(f"{info.id} {reply}")
    return "NameNode " + "; ".join(done)


def main(argv: list[str] | None = None) -> int:
    parser, start_options = command_line_parser("python -m harness.hdfs", service=True)
    for service_parser in parser.service_parsers:
        service_parser.add_argument("--nn", metavar="ID", default=None,
                                    help="only this NameNode (nn1, nn2); default all of the instance's")
    start_options.add_argument("--ha", action="store_true", help="two NameNodes under one NameService (--nameservice)")
    start_options.add_argument("--nameservice", default=DEFAULT_NAMESERVICE, metavar="NAME",
                               help=f"the HA pair's NameService (with --ha; default {DEFAULT_NAMESERVICE})")
    args = parser.parse_args(argv)
    if args.command == "start" and args.nameservice != DEFAULT_NAMESERVICE and not args.ha:
        parser.error("--nameservice needs --ha")
    if args.command in SERVICE_COMMANDS:
        return run_service_command(args, service_stop, service_start, service_status)
    if args.command == "stop":
        stop(args.directory)
        return 0
    instance = start(args.directory, "ha" if args.ha else "single", reuse=reusable(args.directory, args.reuse)
                     or (args.reuse and (Path(args.directory) / "data").exists()), nameservice=args.nameservice)
    print(json.dumps({"webhdfs": instance.webhdfs_url(), "hosts": instance.hosts(), "fs_uri": instance.fs_uri,
                      "pid": instance.pid, "directory": instance.directory,
                      "namenode_tool": instance.namenode_tool_command(), "hdfs": instance.hdfs_command(),
                      "airflow_connection_file": str(Path(instance.directory) / CONNECTION_FILE)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
