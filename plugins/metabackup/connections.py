"""Credentials come from Airflow connections, never from specs.  Looked up at run time only.

In a task this asks Airflow's secrets backends (environment ``AIRFLOW_CONN_<ID>``, the metadata
database, a vault); outside Airflow (the CLI, tests) the environment variables work the same way.
The password never appears in ``repr``, logs, XCom or manifests.

This module is the core's one seam to Airflow: its functions import Airflow lazily, inside the
function, when a connection is resolved (never at import, so the core imports without Airflow).
Every other core module reaches Airflow only through here; ``.importlinter`` forbids the rest of
the core to import ``airflow`` or ``metabackup.airflow`` and allows exactly these imports.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class ConnectionNotFound(LookupError):
    pass


@dataclass(frozen=True)
class ConnectionInfo:
    conn_id: str
    conn_type: str
    host: str
    port: int | None
    login: str
    password: str = field(repr=False)
    schema: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def get_connection(conn_id: str) -> ConnectionInfo:
    from airflow.sdk import BaseHook  # imported lazily: the core stays importable without a scheduler

    try:
        conn = BaseHook.get_connection(conn_id)
    except Exception as exc:  # AirflowNotFoundException and friends
        raise ConnectionNotFound(f"Airflow connection {conn_id!r} is not defined ({type(exc).__name__})") from None
    return ConnectionInfo(
        conn_id=conn_id, conn_type=conn.conn_type or "", host=conn.host or "", port=conn.port,
        login=conn.login or "", password=conn.password or "", schema=conn.schema or "",
        extra=dict(conn.extra_dejson or {}),
    )


def webhdfs_client(conn_id: str) -> Any:
    """An ``hdfs`` library client for the NameService of a ``webhdfs`` connection, the active NameNode first.

    Built by the hdfs provider's hook (:class:`metabackup.airflow.hooks.NameServiceWebHDFSHook`:
    Kerberos, TLS and session settings from the connection), imported lazily like ``get_connection``.
    """
    from metabackup.airflow.hooks import NameServiceWebHDFSHook  # the Airflow layer builds the client

    return NameServiceWebHDFSHook(webhdfs_conn_id=conn_id).get_conn()


class HostKeyNotVerified(ConnectionError):
    """An SSH server's host key could not be verified (none is known for it, or it is not the one
    known): nothing was sent to it.  The message names the connection, the host and the remedy."""


def sftp_client(conn_id: str, known_hosts: str | None = None) -> Any:
    """A paramiko ``SFTPClient`` for an ``sftp`` connection, logged in only after the server's host
    key was verified against the connection's extra ``host_key`` or the ``known_hosts`` file.

    Built by the sftp provider's hook (:class:`metabackup.airflow.hooks.VerifiedSFTPHook`: password,
    key file or private key, proxy command and timeouts from the connection), imported lazily like
    ``get_connection``; raises :class:`HostKeyNotVerified` when neither names the server's key or
    the server shows another, and never accepts a key it was not given.
    """
    from metabackup.airflow.hooks import VerifiedSFTPHook  # the Airflow layer builds the client

    return VerifiedSFTPHook(conn_id, known_hosts=known_hosts).verified_sftp()
