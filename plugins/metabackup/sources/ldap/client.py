"""The LDAP protocol client of the ``ldap`` source: server URL, bind, error messages, paged search,
the root DSE's naming contexts."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import ldap
from ldap.controls import SimplePagedResultsControl

from metabackup.connections import ConnectionInfo
from metabackup.errors import BackupError


class LdapSourceError(BackupError):
    """The LDAP server cannot be backed up as asked; the message names the connection and why."""


def server_url(conn: ConnectionInfo) -> str:
    scheme = conn.extra.get("scheme") or ("ldaps" if conn.port == 636 else "ldap")
    port = conn.port or (636 if scheme == "ldaps" else 389)
    return f"{scheme}://{conn.host}:{port}"


def connect(conn: ConnectionInfo) -> ldap.ldapobject.LDAPObject:
    """Bind with the connection's DN and password; errors name the connection, never the password."""
    url = server_url(conn)
    where = f"LDAP connection {conn.conn_id!r} ({url})"
    client = ldap.initialize(url, bytes_mode=False)
    timeout = float(conn.extra.get("timeout", 30))
    client.set_option(ldap.OPT_PROTOCOL_VERSION, 3)
    client.set_option(ldap.OPT_REFERRALS, 0)
    client.set_option(ldap.OPT_NETWORK_TIMEOUT, timeout)
    client.set_option(ldap.OPT_TIMEOUT, timeout)
    if conn.extra.get("ca_file"):
        client.set_option(ldap.OPT_X_TLS_CACERTFILE, conn.extra["ca_file"])
    if conn.extra.get("tls_require_cert") == "never":
        client.set_option(ldap.OPT_X_TLS_REQUIRE_CERT, ldap.OPT_X_TLS_NEVER)
    client.set_option(ldap.OPT_X_TLS_NEWCTX, 0)
    try:
        if conn.extra.get("starttls"):
            client.start_tls_s()
        client.simple_bind_s(conn.login, conn.password)
    except ldap.INVALID_CREDENTIALS:
        raise LdapSourceError(f"{where}: the server rejected the bind DN {conn.login!r} or its password") from None
    except (ldap.SERVER_DOWN, ldap.CONNECT_ERROR) as exc:  # TLS handshake failures surface as these too
        tls = url.startswith("ldaps:") or conn.extra.get("starttls")
        hint = ("; with TLS, also check that the server certificate is trusted (extra.ca_file) and matches the host"
                if tls else "")
        raise LdapSourceError(f"{where}: cannot reach the server or set up the connection ({ldap_message(exc)}){hint}") from None
    except ldap.LDAPError as exc:
        raise LdapSourceError(f"{where}: bind failed: {ldap_message(exc)}") from None
    return client


def ldap_message(exc: ldap.LDAPError) -> str:
    """The server's description and diagnostic of an LDAP error, or its class name."""
    info = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
    return "; ".join(str(info[k]) for k in ("desc", "info") if info.get(k)) or type(exc).__name__


def paged_search(client, base: str, scope: int, filterstr: str, attrs: list[str] | None,
                 page_size: int = 500) -> Iterator[tuple[str, dict[str, list[bytes]]]]:
    for page in search_pages(client, base, scope, filterstr, attrs, page_size):
        yield from page


def search_pages(client, base: str, scope: int, filterstr: str, attrs: list[str] | None,
                 page_size: int = 500) -> Iterator[list[tuple[str, dict[str, list[bytes]]]]]:
    """The entries of a paged search, a page at a time (referrals left out).

    Entries are read one message at a time as the server sends them: libldap's wait for a whole
    page (``result3(all=1)``) costs about three times the search itself.  The next page is asked
    for before a page is handed out, so the server reads it while the caller works on this one;
    a caller that stops early has the outstanding request abandoned."""
    control = SimplePagedResultsControl(True, size=page_size, cookie="")
    msgid = client.search_ext(base, scope, filterstr, attrs, serverctrls=[control])
    result3 = client.result3
    try:
        page: list[tuple[str, dict[str, list[bytes]]]] = []
        while msgid is not None:
            kind, data, _, controls = result3(msgid, 0)
            if kind == ldap.RES_SEARCH_ENTRY:
                page += data
            elif kind == ldap.RES_SEARCH_RESULT:
                msgid = None
                cookie = next((c.cookie for c in controls if c.controlType == SimplePagedResultsControl.controlType), b"")
                if cookie:
                    control.cookie = cookie
                    msgid = client.search_ext(base, scope, filterstr, attrs, serverctrls=[control])
                if page:
                    yield page
                    page = []
    finally:
        if msgid is not None:
            with contextlib.suppress(ldap.LDAPError):
                client.abandon_ext(msgid)


def naming_contexts(client) -> list[str]:
    """The suffixes a server serves, from its root DSE's ``namingContexts`` (empty if it does not say)."""
    try:
        found = client.search_s("", ldap.SCOPE_BASE, "(objectClass=*)", ["namingContexts"])
    except ldap.LDAPError:
        return []
    entry = found[0][1] if found else {}
    return [v.decode() for v in entry.get("namingContexts", [])]
