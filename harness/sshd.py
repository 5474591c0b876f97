"""Throwaway OpenSSH SFTP servers for tests, benchmarks and the demo (Debian's sshd, loopback only).

    PYTHONPATH=plugins:. python -m harness.sshd start DIR [--reuse]
        # prints a JSON with host, port, login, the data root and the host key; DIR/airflow-connection.json
        # (0600) is an Airflow ``sftp`` connection for it: AIRFLOW_CONN_<ID>="$(cat DIR/airflow-connection.json)"
    PYTHONPATH=plugins:. python -m harness.sshd stop DIR

``sshd -D -e -f DIR/sshd_config`` (run as root) with a generated config: a free port on
127.0.0.1, its own ed25519 host key (``ssh-keygen``), ``Subsystem sftp internal-sftp`` forced for
every session (no shell), password authentication for one login only.  The login is a dedicated
local user, :data:`OS_USER`, created when absent with no login shell; its generated password is
kept root-only in the user's home so every instance on the machine shares it.  The sftp server
runs with umask 000, so a target that leaves modes to the server's umask shows it (files 0666).
Each instance gets a data root owned by the user under the system temp directory (removed by
``stop``).  Readiness is the SSH banner read on the port, not a sleep.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness import (
    CONNECTION_FILE, command_line_parser, end_process, free_port, load_instance, process_alive, reusable, save_instance,
    write_private_json,
)
from metabackup.fsutil import child_env, write_private

SSHD = "/usr/sbin/sshd"
OS_USER = "metabackup-sftp"
HOME = Path("/var/lib") / OS_USER
PASSWORD_FILE = HOME / "harness-password"  # root-only (0600, root-owned): the user cannot read it
PRIVSEP_DIR = Path("/run/sshd")  # Debian's sshd refuses to start without it
HOST_KEY = "ssh_host_ed25519_key"


@dataclass
class SshdInstance:
    directory: str
    port: int
    login: str
    password: str
    host_key: str  # the server's public host key, "ssh-ed25519 AAAA..." (no comment)
    root: str  # a directory of the login's own on the server, for backups
    pid: int = 0

    host = "127.0.0.1"

    @property
    def conf(self) -> Path:
        return Path(self.directory) / "sshd_config"

    def connection(self, **extra: Any) -> dict[str, Any]:
        """An Airflow ``sftp`` connection (JSON form): the server's host key pinned in ``extra``."""
        return {"conn_type": "sftp", "host": self.host, "port": self.port, "login": self.login,
                "password": self.password, "extra": {"host_key": self.host_key, **extra}}

    def sftp_session(self):
        """A paramiko SFTP session of the caller's own, as the login, the host key pinned (the tests'
        view of the server's files, apart from any target); closing its transport ends it."""
        import paramiko

        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        key_type, key_data = self.host_key.split()[:2]
        key = paramiko.PKey.from_type_string(key_type, base64.b64decode(key_data))
        client.get_host_keys().add(f"[{self.host}]:{self.port}", key_type, key)
        client.connect(self.host, self.port, username=self.login, password=self.password, look_for_keys=False,
                       allow_agent=False, timeout=10)
        return client.open_sftp()

    def connection_uri(self) -> str:
        """:meth:`connection` as the value of an ``AIRFLOW_CONN_<ID>`` variable."""
        return json.dumps(self.connection())

    def stop(self) -> None:
        stop(self.directory)


def _run(args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(args, input=stdin, capture_output=True, text=True, env=child_env())
    if done.returncode != 0:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
    return done


def ensure_user() -> str:
    """The dedicated login (created if absent, shell-less) and its password, set with chpasswd.

    Every instance shares the one password: it is generated once and kept root-only in the user's
    home, under a lock, so instances started at the same time do not change it under each other.
    """
    if os.geteuid() != 0:
        raise RuntimeError("harness.sshd runs sshd as root (it creates the test login and binds sshd's privsep)")
    try:
        pwd.getpwnam(OS_USER)
    except KeyError:
        _run(["useradd", "--system", "--home-dir", str(HOME), "--shell", "/usr/sbin/nologin", OS_USER])
    user = pwd.getpwnam(OS_USER)
    HOME.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chown(HOME, user.pw_uid, user.pw_gid)
    fd = os.open(PASSWORD_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "r+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        os.fchown(handle.fileno(), 0, 0)
        os.fchmod(handle.fileno(), 0o600)
        password = handle.read().strip()
        if not password:
            password = secrets.token_urlsafe(18)
            handle.seek(0)
            handle.truncate()
            handle.write(password + "\n")
            handle.flush()
        # again each time: the account may have been reset since; the secret goes through stdin only
        _run(["chpasswd"], stdin=f"{OS_USER}:{password}\n")
    return password


def make_data_root() -> str:
    """A new directory under the system temp directory, owned by the login (0700)."""
    user = pwd.getpwnam(OS_USER)
    root = Path(tempfile.mkdtemp(prefix="metabackup-sftp-"))
    os.chown(root, user.pw_uid, user.pw_gid)
    os.chmod(root, 0o700)
    return str(root)


def make_host_key(directory: Path) -> str:
    """A fresh ed25519 host key in ``directory`` (replacing one there); its public key line."""
    key = directory / HOST_KEY
    for path in (key, key.with_name(HOST_KEY + ".pub")):
        path.unlink(missing_ok=True)
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "metabackup harness", "-f", str(key)])
    return " ".join(key.with_name(HOST_KEY + ".pub").read_text().split()[:2])


def write_config(directory: Path, port: int) -> Path:
    conf = f"""# generated by harness.sshd
Port {port}
ListenAddress 127.0.0.1
HostKey {directory / HOST_KEY}
PidFile {directory / "sshd.pid"}
LogLevel VERBOSE
UsePAM no
PermitRootLogin no
AllowUsers {OS_USER}
PasswordAuthentication yes
PermitEmptyPasswords no
KbdInteractiveAuthentication no
PubkeyAuthentication no
AuthorizedKeysFile none
AllowTcpForwarding no
AllowAgentForwarding no
X11Forwarding no
PermitTTY no
Subsystem sftp internal-sftp -u 000
ForceCommand internal-sftp -u 000
"""
    path = directory / "sshd_config"
    write_private(path, conf)
    return path


def prepare(directory: str | Path, reuse: bool = False) -> SshdInstance:
    """A fresh, stopped instance: config, host key, the login and a data root.  With ``reuse``, the
    instance already in ``directory`` (stopped if running), its host key and data kept."""
    directory = Path(directory).resolve()
    if reuse:
        instance = load(directory)
        stop(directory, keep_data=True)
        return instance
    if (directory / "instance.json").exists():
        stop(directory)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True, mode=0o700)
    password = ensure_user()
    port = free_port()
    host_key = make_host_key(directory)
    write_config(directory, port)
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    _run([SSHD, "-t", "-f", str(directory / "sshd_config")])
    instance = SshdInstance(str(directory), port, OS_USER, password, host_key, make_data_root())
    save_instance(instance)
    return instance


def load(directory: str | Path) -> SshdInstance:
    return load_instance(SshdInstance, directory)


def banner(port: int, timeout: float = 2.0) -> str:
    """The SSH identification line the server sends first ("" if none)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        return sock.makefile("rb").readline(256).decode("ascii", "replace").strip()


def start(instance: SshdInstance, timeout: float = 20) -> SshdInstance:
    """Run the prepared instance; return once it sends its SSH banner."""
    PRIVSEP_DIR.mkdir(mode=0o755, exist_ok=True)
    directory = Path(instance.directory)
    if not Path(instance.root).is_dir():  # (a reused instance whose data root was removed)
        instance.root = make_data_root()
    log = open(directory / "sshd.log", "ab")  # noqa: SIM115 - handed to the daemon
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(instance.conf)], stdin=subprocess.DEVNULL, stdout=log,
                            stderr=log, start_new_session=True, env=child_env())
    log.close()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{_tail(directory / 'sshd.log')}")
        try:
            if banner(instance.port).startswith("SSH-2.0-"):
                instance.pid = proc.pid
                save_instance(instance)
                write_private_json(directory / CONNECTION_FILE, instance.connection())
                return instance
        except OSError:
            pass
        time.sleep(0.05)
    proc.kill()
    proc.wait()
    raise RuntimeError(f"sshd was not answering within {timeout}s:\n{_tail(directory / 'sshd.log')}")


def new_host_key(instance: SshdInstance) -> SshdInstance:
    """Restart the server with a freshly generated host key (what a reinstalled or spoofed host shows)."""
    stop(instance.directory, keep_data=True)
    instance.host_key = make_host_key(Path(instance.directory))
    return start(instance)


def session_pids(instance: SshdInstance) -> list[int]:
    """The processes sshd forked for its open connections (each runs one session)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], list(parents.get(instance.pid, []))
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(parents.get(pid, []))
    return found


def kill_sessions(instance: SshdInstance) -> list[int]:
    """SIGKILL every open connection's processes (the listener stays): a connection dropped mid-transfer."""
    killed = session_pids(instance)
    for pid in killed:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    return killed


def stop(directory: str | Path, timeout: float = 20, keep_data: bool = False) -> None:
    """Stop the server and its open sessions; remove the data root unless ``keep_data``."""
    path = Path(directory) / "instance.json"
    if not path.exists():
        return
    instance = load(directory)
    if process_alive(instance.pid):
        kill_sessions(instance)
        end_process(instance.pid, timeout)
    (Path(directory) / "sshd.pid").unlink(missing_ok=True)
    if not keep_data:
        shutil.rmtree(instance.root, ignore_errors=True)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def main(argv: list[str] | None = None) -> int:
    parser, _ = command_line_parser("python -m harness.sshd")
    args = parser.parse_args(argv)
    if args.command == "stop":
        stop(args.directory)
        return 0
    instance = start(prepare(args.directory, reuse=reusable(args.directory, args.reuse)))
    print(json.dumps({"host": instance.host, "port": instance.port, "login": instance.login, "root": instance.root,
                      "host_key": instance.host_key, "pid": instance.pid, "directory": instance.directory,
                      "airflow_connection_file": str(Path(instance.directory) / CONNECTION_FILE)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
