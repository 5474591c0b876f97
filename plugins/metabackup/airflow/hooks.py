"""The providers' hooks the core reaches through :mod:`metabackup.connections`, made to fit it.

WebHDFS for one NameService: the hdfs provider's hook, made aware of HA NameNode pairs.

One Airflow connection (type ``webhdfs``) per NameService.  Its ``host`` lists the NameNodes' HTTP
addresses, comma-separated (:mod:`metabackup.hdfs` reads it); ``login`` is the HDFS user.

The stock hook returns a client for the first NameNode that answers, bound to that NameNode only.
This hook has the core (:func:`metabackup.hdfs.namenode_urls`) order the NameNodes by HA state, the
active one first, and returns one client over all of them: the ``hdfs`` library moves to the next
NameNode when one answers ``StandbyException`` or stops answering, so a failover during a run is
survived too.

SFTP: the sftp provider's hook with host-key checking that cannot be turned off
(:class:`VerifiedSFTPHook`).  Only the building of clients from Airflow connections lives here.
"""

from __future__ import annotations

import hashlib
from base64 import b64encode
from typing import Any

import paramiko
from airflow.providers.apache.hdfs.hooks.webhdfs import AirflowWebHDFSHookException, WebHDFSHook
from airflow.providers.sftp.hooks.sftp import SFTPHook
from paramiko.config import SSH_PORT

from metabackup.connections import HostKeyNotVerified
from metabackup.hdfs import NoNameNode, namenode_urls


class NameServiceWebHDFSHook(WebHDFSHook):
    """A :class:`WebHDFSHook` whose client follows the active NameNode of an HA NameService."""

    hook_name = "WebHDFS NameService (metabackup)"

    def namenode_urls(self) -> tuple[list[str], Any]:
        """Base URLs of the NameNodes, the active first, and the connection."""
        connection = self.get_connection(self.webhdfs_conn_id)
        try:
            urls = namenode_urls(connection.host or "", connection.port, connection.extra_dejson,
                                 label=self.webhdfs_conn_id)
        except NoNameNode as exc:
            raise AirflowWebHDFSHookException(str(exc)) from None
        return urls, connection

    def _find_valid_server(self) -> Any:
        urls, connection = self.namenode_urls()
        first = self._get_client(urls[0].split("://", 1)[1], None, connection.login, connection.password,
                                 connection.schema, connection.extra_dejson)
        if len(urls) == 1:
            return first
        from airflow.providers.apache.hdfs.hooks import webhdfs as provider
        from hdfs import InsecureClient

        suffix = f"/{connection.schema}" if connection.schema else ""
        joined = ";".join(f"{url}{suffix}" for url in urls)
        if provider._kerberos_security_mode:
            return provider.KerberosClient(joined, session=first._session)
        return InsecureClient(joined, user=self.proxy_user or connection.login, session=first._session)


def fingerprint(key: paramiko.PKey) -> str:
    """A public key as OpenSSH shows it: ``ssh-ed25519 SHA256:<base64 of its SHA-256>``."""
    digest = b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


class VerifiedSFTPHook(SFTPHook):
    """An :class:`SFTPHook` that trusts only the host keys it is given, whatever the connection says.

    The stock hook can be told to accept any host key (the connection's extra ``no_host_key_check``,
    which older releases of the provider even default to true, or ``allow_host_key_change``), and
    falls back on the user's ``~/.ssh/known_hosts``.  This one trusts the connection's extra ``host_key``
    and the entries of a ``known_hosts`` file for the server's name (``host``, or ``[host]:port``
    off port 22), and nothing else: ``no_host_key_check`` and ``allow_host_key_change`` are
    overridden, and with neither a ``host_key`` nor a known entry it refuses before connecting.
    The hook pins the first trusted key on its paramiko client, whose default policy rejects an
    unknown key; paramiko compares the key before it authenticates, so no password or signature
    reaches a server with another key.  The key of the established session is compared again with
    the trusted ones (the hook also loads the user's ``~/.ssh/known_hosts``, which must not widen
    the trust).

    SSH compression is off unless the connection's extra asks for it (``"compress": "true"``): the
    archives are gzip already, and compressing them again only slows the transfer several-fold.
    """

    hook_name = "SFTP with verified host key (metabackup)"
    #: seconds a request may wait for the server's answer before the link counts as dead (a
    #: partitioned network otherwise hangs a task until TCP gives up)
    io_timeout = 600.0

    def __init__(self, ssh_conn_id: str, known_hosts: str | None = None):
        super().__init__(ssh_conn_id=ssh_conn_id)
        self.known_hosts = known_hosts
        self.no_host_key_check = False
        self.allow_host_key_change = False
        extra = self.get_connection(ssh_conn_id).extra_dejson or {}
        self.compress = str(extra.get("compress", "false")).lower() == "true"
        self.trusted = self._trusted_keys()
        if not self.trusted:
            where = (f"the known_hosts file {known_hosts} has no key for {self._known_hosts_name}"
                     if known_hosts else "the target names no known_hosts file")
            raise HostKeyNotVerified(
                f"connection {ssh_conn_id!r} ({self._address}) has no host_key in its extra and {where}; "
                f"an unknown host key is never accepted: {self._remedy}")
        self.host_key = self.trusted[0]

    @property
    def _address(self) -> str:
        return f"{self.remote_host}:{self.port}"

    @property
    def _known_hosts_name(self) -> str:
        return self.remote_host if self.port == SSH_PORT else f"[{self.remote_host}]:{self.port}"

    @property
    def _remedy(self) -> str:
        return (f"put the server's public key (as `ssh-keyscan -p {self.port} {self.remote_host}` prints it, checked "
                "with the server's administrator) in the connection's extra as host_key, e.g. "
                '{"host_key": "ssh-ed25519 AAAA..."}, or give the target a known_hosts file that lists it')

    def _trusted_keys(self) -> list[paramiko.PKey]:
        keys = [self.host_key] if self.host_key is not None else []
        if self.known_hosts:
            try:
                known = paramiko.HostKeys(self.known_hosts)
            except (OSError, paramiko.SSHException) as exc:
                raise HostKeyNotVerified(f"connection {self.ssh_conn_id!r} ({self._address}): the known_hosts file "
                                         f"{self.known_hosts} cannot be read: {exc}") from None
            keys += list((known.lookup(self._known_hosts_name) or {}).values())
        return keys

    def _refused(self, detail: str) -> HostKeyNotVerified:
        return HostKeyNotVerified(f"the SSH host key of {self._address} (connection {self.ssh_conn_id!r}) {detail}; "
                                  f"refusing to log in (the server may have been replaced, or someone sits between). "
                                  f"If the server's key changed on purpose: {self._remedy}")

    def verified_sftp(self) -> paramiko.SFTPClient:
        """Connect, log in and open the SFTP session, the host key verified (see the class)."""
        try:
            sftp = self.get_conn()
        except paramiko.BadHostKeyException as exc:
            raise self._refused(f"is {fingerprint(exc.key)}, not the expected {fingerprint(exc.expected_key)}") from None
        except paramiko.SSHException as exc:
            if "not found in known_hosts" not in str(exc):  # paramiko's RejectPolicy: no key of that type known
                raise
            raise self._refused(f"is of a type none of the trusted keys has ({', '.join(map(fingerprint, self.trusted))})"
                                ) from None
        transport = sftp.get_channel().get_transport()
        shown = transport.get_remote_server_key()
        if not any(shown.asbytes() == key.asbytes() for key in self.trusted):
            transport.close()
            raise self._refused(f"is {fingerprint(shown)}, which is not among the trusted keys "
                                f"({', '.join(map(fingerprint, self.trusted))})")
        sftp.get_channel().settimeout(self.io_timeout)
        return sftp
