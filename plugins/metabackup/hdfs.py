"""HDFS NameService addressing: which NameNodes a connection names, and which one is active.

No Airflow here.  A WebHDFS connection's ``host`` lists the NameNodes' HTTP addresses,
comma-separated, each ``host`` or ``host:port`` (a bare host takes the connection's port), e.g.
``nn1.example.com:9870,nn2.example.com:9870``; its extra ``use_ssl`` selects https.  Each NameNode
is asked for its HA state (``/isActive``, else JMX ``NameNodeStatus``) and the active one is put
first.  The HTTP client is injected (``http``: ``requests``, a ``requests.Session`` or anything
with the same ``get(url, timeout=...)``), so the logic is tested without a cluster.  The Airflow
side (:mod:`metabackup.airflow.hooks`) builds the WebHDFS client over the ordered NameNodes.
:func:`is_failover_error` tells a failure a failover explains (the NameNode stopped being active or
went away under the call) from the others, :func:`active_namenode` which NameNode is active now:
the HDFS targets upload again after asking anew.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import requests

log = logging.getLogger(__name__)

JMX_STATUS = "/jmx?qry=Hadoop:service=NameNode,name=NameNodeStatus"
IS_ACTIVE = "/isActive"
PROBE_TIMEOUT = 10
# Sort rank by HA state: the active NameNode first, one in an unknown state next, then observers and
# standbys, unreachable ones last.
STATE_RANK = {"active": 0, "observer": 2, "standby": 2, None: 3}


# Java exceptions a WebHDFS answer names when the NameNode it reached (or the DataNode's own call to
# it, during a write) stopped being active or went away: the NameNodes asked again, the call may go
# through at the active one.
FAILOVER_EXCEPTIONS = frozenset({
    "StandbyException", "RetriableException", "ObserverRetryOnActiveException", "ConnectException",
    "ConnectTimeoutException", "EOFException", "SocketException", "SocketTimeoutException",
    "NoRouteToHostException",
})


class NoNameNode(ValueError):
    """The connection names no NameNode."""


@dataclass(frozen=True)
class NameNodeAddress:
    host: str
    port: int | None

    @property
    def netloc(self) -> str:
        return f"{self.host}:{self.port}" if self.port else self.host


def parse_namenodes(hosts: str, default_port: int | None) -> list[NameNodeAddress]:
    """``"a:9870,b"`` → addresses; a bare host takes ``default_port``."""
    found = []
    for item in (h.strip() for h in (hosts or "").split(",")):
        if not item:
            continue
        host, sep, port = item.rpartition(":")
        if sep and port.isdigit():
            found.append(NameNodeAddress(host, int(port)))
        else:
            found.append(NameNodeAddress(item, default_port))
    return found


def scheme_for(extra: dict[str, Any]) -> str:
    """``https`` when the connection's extra sets ``use_ssl`` (``true``/``"True"``/``"true"``), else ``http``."""
    use_ssl = extra.get("use_ssl", False)
    return "https" if str(use_ssl) in ("True", "true") or use_ssl is True else "http"


def namenode_state(base_url: str, http: Any = None) -> str | None:
    """``active``/``standby``/... as the NameNode reports it, or None when it cannot be asked.

    Asks the NameNode's ``/isActive`` servlet (200 active, 405 standby; Hadoop 3.3+), else its
    JMX ``NameNodeStatus`` bean.  ``/isActive`` comes first because JMX beans are per JVM: two
    NameNodes in one process (a test cluster) would both report the first one's state.
    ``http``: ``requests`` (the default), a session, or any object with ``get(url, timeout=)``.
    """
    http = http or requests
    try:
        probe = http.get(base_url.rstrip("/") + IS_ACTIVE, timeout=PROBE_TIMEOUT)
        if probe.status_code in (200, 405):
            return "active" if probe.status_code == 200 else "standby"
        response = http.get(base_url.rstrip("/") + JMX_STATUS, timeout=PROBE_TIMEOUT)
        if response.status_code != 200:
            return None
        beans = response.json().get("beans") or []
        return beans[0].get("State") if beans else None
    except (requests.RequestException, ValueError):
        return None


def active_first(urls: list[str], states: dict[str, str | None]) -> list[str]:
    """``urls`` ordered by :data:`STATE_RANK` of their state (stable: ties keep the connection's order)."""
    return sorted(urls, key=lambda u: STATE_RANK.get(states[u], 1))


def namenode_urls(hosts: str, default_port: int | None, extra: dict[str, Any] | None = None, *,
                  http: Any = None, label: str = "") -> list[str]:
    """Base URLs (``scheme://host:port``) of the NameNodes a connection names, the active one first.

    ``hosts``/``default_port``/``extra`` are the connection's host, port and extra; ``label`` names
    the connection in the log line.  Raises :class:`NoNameNode` when ``hosts`` names none.
    """
    addresses = parse_namenodes(hosts or "", default_port)
    if not addresses:
        raise NoNameNode(f"connection {label!r} names no NameNode in its host field")
    scheme = scheme_for(extra or {})
    urls = [f"{scheme}://{a.netloc}" for a in addresses]
    states = {url: namenode_state(url, http) for url in urls}
    log.info("NameNodes of %s: %s", label, ", ".join(f"{u} {states[u] or 'unreachable'}" for u in urls))
    return active_first(urls, states)


def active_namenode(urls: list[str], http: Any = None) -> str | None:
    """The first of ``urls`` whose NameNode says it is active, or None (none is, or none answers)."""
    return next((url for url in urls if namenode_state(url, http) == "active"), None)


def is_failover_error(exc: BaseException | None) -> bool:
    """True when ``exc`` (or an exception it was raised from) is what a NameNode failover causes: a
    connection lost, refused or timed out, or a WebHDFS error naming one of
    :data:`FAILOVER_EXCEPTIONS` (the ``hdfs`` library's ``HdfsError.exception``)."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError,
                            ConnectionError)):
            return True
        if getattr(exc, "exception", None) in FAILOVER_EXCEPTIONS:
            return True
        exc = exc.__cause__
    return False
