"""The ``ldap`` source kind: an LDAP directory (OpenLDAP's LdapServer), over the LDAP protocol.

Full: every entry under each base DN, read with paged results, written as LDIF by python-ldap's
LDIF writer, with the operational attributes a faithful restore needs (entryUUID,
create/modifyTimestamp, creators/modifiersName, entryCSN, ppolicy state) and binary values
intact; ``cn=config`` too when the bind identity can read it.

Incremental: LDIF change records (add / modify / delete / modrdn), in order, since the parent:
- ``accesslog``: read from the server's slapo-accesslog database (successful writes after the
  parent's ``reqStart`` watermark);
- ``digest``: a fresh export compared with the parent's per-entry digest index (changed entries
  become replace/delete modifications, new ones adds, vanished ones deletes; a rename appears as
  delete + add, keeping its entryUUID).  An incremental stores only the changed part of the index
  and a reference to its parent's (:mod:`.index`).
The manifest's ``position`` records the method, the watermark and each base's contextCSN.

Restore: load the full into an empty server (online adds with the Relax Rules control, or
offline ``slapadd`` when the server is local and stopped), then apply each incremental's change
records in order.  Replay is idempotent, so changes made while a full was exported (and thus
possibly in both the full and the next incremental) apply cleanly.

In place (:mod:`.inplace`, with a ``service`` block and ``slapd_conf`` or ``slapd_config_dir``): the
chain's final state computed offline as LDIF and loaded by ``slapadd`` into a fresh database
directory per base DN, swapped with the live ones; ``cn=config`` is kept unless ``restore_config``.

Modules, one concern each:
- :mod:`.client`: the LDAP protocol client (server URL, bind, error messages, paged search);
- :mod:`.records`: LDIF records, the archive's members, DNs and per-entry digests;
- :mod:`.capture`: change capture for incrementals (accesslog, digest comparison);
- :mod:`.index`: the per-entry digest index (written, read back and checked, its staging copy);
- :mod:`.kind`: the engine (:class:`~.kind.LdapSource`): snapshot, archive, restore;
- :mod:`.restore`: restore into a directory server, and :func:`~.restore.dump_state`;
- :mod:`.inplace`: the in-place restore (offline final state, slapadd, validation, identity);
- this module: the options and the plug-in, light enough for DAG parsing (no python-ldap).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from metabackup.fields import ConnId, ProblemRow, SpecModel, TextList, between, short
from metabackup.manifest import Manifest, int_field, need, text_field
from metabackup.sources.base import RestoreError, RestoreRequest, SourceKind


class LdapOptions(SpecModel):
    """``kind: ldap``: an LDAP directory reached through an Airflow connection."""

    conn_id: ConnId = Field(description="the Airflow connection of the directory server (bind DN and password)")
    base_dns: TextList = Field(description="the base DNs to back up, e.g. dc=hadoop,dc=com")
    change_method: Literal["auto", "accesslog", "digest"] = "auto"
    page_size: between(1, 10000) = 500
    include_config: bool = True
    accesslog_base: str = "cn=accesslog"
    digest_index: Literal["delta", "whole"] = Field(
        "delta", description="what a digest incremental stores of its per-entry index: the entries that changed and a "
        "reference to its parent (delta; the whole index stays in the staging area for the next incremental), or "
        "the whole index (larger sets; no state kept between runs)")

    method: Literal["protocol", "slapcat"] = Field(
        "protocol", description="how a full reads the directory: over LDAP (protocol), or with slapcat from the database "
        "files of a slapd on the worker's own host (back-mdb only; safe while it runs)")
    slapd_conf: str | None = Field(None, description="method slapcat and in-place restore: the server's slapd.conf (an "
                                   "absolute path)")
    slapd_config_dir: str | None = Field(None, description="method slapcat and in-place restore: the server's cn=config "
                                         "directory, slapcat -F (an absolute path)")

    restore_config: bool = Field(
        False, description="an in-place restore also replaces the server's cn=config directory (slapd_config_dir) with "
        "the cn=config the chain's full saved (swapped and rolled back with the databases)")

    @field_validator("slapd_conf", "slapd_config_dir")
    @classmethod
    def _absolute(cls, value: str | None) -> str | None:
        if value is not None:
            path = Path(value)
            if not path.is_absolute() or ".." in path.parts or any(c in value for c in "\0\n\r"):
                raise ValueError(f"{short(value)} must be an absolute path without '..'")
        return value

    @model_validator(mode="after")
    def _slapcat_needs_a_config(self) -> LdapOptions:
        given = [f for f in ("slapd_conf", "slapd_config_dir") if getattr(self, f) is not None]
        if self.method == "slapcat" and len(given) != 1:
            raise ProblemRow("method", "slapcat needs exactly one of slapd_conf (a slapd.conf) and slapd_config_dir "
                             "(a cn=config directory)")
        if self.restore_config and self.slapd_config_dir is None:
            raise ProblemRow("restore_config", "needs slapd_config_dir, the server's cn=config directory it replaces "
                             "(a slapd.conf server keeps its configuration in a file: restore that as a files source)")
        if self.restore_config and not self.include_config:
            raise ProblemRow("restore_config", "needs include_config: true (the sets must hold cn=config)")
        if len(given) > 1:
            raise ProblemRow(given[1], "is given with slapd_conf; give one of slapd_conf (a slapd.conf) and "
                             "slapd_config_dir (a cn=config directory)")
        return self

    @field_validator("base_dns")
    @classmethod
    def _dns(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError("must list at least one base DN")
        for i, dn in enumerate(value):
            if "=" not in dn:
                raise ProblemRow(f"[{i}]", f"{short(dn)} is not a DN such as dc=hadoop,dc=com")
        return value


class LdapKind(SourceKind):
    name = "ldap"
    Options = LdapOptions
    engine_path = "metabackup.sources.ldap.kind:LdapSource"
    restores_into = "connection"

    def destination(self, where: Any, request: RestoreRequest) -> Any:
        from metabackup.connections import get_connection
        from metabackup.sources.ldap.restore import LdapDestination

        return LdapDestination(conn=get_connection(where))

    def check_position(self, pos: dict, at: str) -> None:
        """A set's position, read back from a target: base DNs, entry count, method, watermark."""
        need(isinstance(pos.get("base_dns"), list) and all(isinstance(b, str) and "=" in b for b in pos["base_dns"]),
             f"{at}.base_dns", pos.get("base_dns"), "a list of DNs")
        int_field(pos, f"{at}.entries", optional=True)
        text_field(pos, f"{at}.method", re.compile(r"^(full|accesslog|digest|export)$"), "full, accesslog, digest or export",
             optional=True)
        text_field(pos, f"{at}.watermark", optional=True)
        text_field(pos, f"{at}.reader", re.compile(r"^(slapcat|ldapsearch|python-ldap)$"), "slapcat, ldapsearch or python-ldap",
                   optional=True)
        text_field(pos, f"{at}.index_form", re.compile(r"^(whole|delta)$"), "whole or delta", optional=True)
        text_field(pos, f"{at}.index_sha256", re.compile(r"^[0-9a-f]{64}$"), "a SHA-256 in hex", optional=True)

    def validate_restored(self, chain: list[Manifest], source: Any, dest: Any, in_place: bool) -> dict[str, Any]:
        from metabackup.sources.ldap.restore import dump_state

        position = chain[-1].position
        state = dump_state(dest.conn, list(source.options.base_dns))  # the spec's bases, never a manifest's
        if position.get("entries") is not None and len(state) != position["entries"]:
            raise RestoreError(f"the restored directory holds {len(state)} entries under {list(source.options.base_dns)}; "
                               f"the set recorded {position['entries']}")
        return {"entries": len(state)}

    @contextlib.contextmanager
    def scratch_destination(self, source: Any, scratch: Path) -> Iterator[Any]:
        """A scratch slapd (:mod:`metabackup.scratch_slapd`) whose suffix is the backed-up base DN."""
        from metabackup.connections import ConnectionInfo
        from metabackup.scratch_slapd import scratch_slapd
        from metabackup.sources.ldap.restore import LdapDestination

        bases = source.options.base_dns
        if len(bases) != 1:
            raise RestoreError(f"a scratch test restore needs one base DN per source; {source.name} has {list(bases)}")
        with scratch_slapd(scratch / "slapd", bases[0]) as server:
            yield LdapDestination(conn=ConnectionInfo(
                conn_id="metabackup-scratch", conn_type="ldap", host="127.0.0.1", port=server.port,
                login=server.admin_dn, password=server.password))

    # ---- in place (metabackup.sources.ldap.inplace): slapadd into fresh database directories ----
    in_place = True
    live_dirs_hint = ("the slapd database directory of each base DN, in the order of base_dns (its `directory` in "
                      "slapd.conf, olcDbDirectory in cn=config), then the accesslog database's directory if the server "
                      "has one")

    def live_dirs(self, options: LdapOptions, service: Any) -> list[tuple[str, str]]:
        dirs = super().live_dirs(options, service)
        if options.restore_config and dirs:
            dirs.append(("slapd_config_dir", options.slapd_config_dir))
        return dirs

    def service_problems(self, options: LdapOptions, service: Any) -> list[tuple[str, str]]:
        rows = []
        if options.restore_config:
            config = options.slapd_config_dir.rstrip("/")
            for i, path in enumerate(service.data_dirs):
                if path.rstrip("/") == config or path.startswith(config + "/") or config.startswith(path.rstrip("/") + "/"):
                    rows.append((f"data_dirs[{i}]", f"{path} and slapd_config_dir {options.slapd_config_dir}: one is or "
                                                   "lies inside the other"))
        if len(service.data_dirs) not in (len(options.base_dns), len(options.base_dns) + 1):
            rows.append(("data_dirs", f"must name one slapd database directory per base DN, in the order of base_dns "
                                      f"({len(options.base_dns)}), then the directory of the accesslog database "
                                      f"({options.accesslog_base}) if the server has one; got {len(service.data_dirs)}"))
        if options.slapd_conf is None and options.slapd_config_dir is None:
            rows.append(("../slapd_conf", "is required for an in-place restore (the source has a service block): the "
                                          "server's slapd.conf, or slapd_config_dir for a cn=config directory; slapadd "
                                          "loads the set through a copy of it"))
        return rows

    def rebuild_beside(self, chain: list[Manifest], open_archive: Any, source: Any, scratch: Path,
                       request: RestoreRequest) -> Any:
        from metabackup.sources.ldap.inplace import rebuild

        if request.point_in_time is not None:
            raise RestoreError("an ldap source restores to a set, not to a point in time")
        return rebuild(chain, open_archive, source, scratch)

    def validate_in_place(self, chain: list[Manifest], source: Any, facts: dict[str, Any]) -> dict[str, Any]:
        from metabackup.sources.ldap.inplace import validate

        return validate(source, facts)

    def live_identity(self, source: Any) -> dict[str, Any]:
        from metabackup.sources.ldap.inplace import identity

        return identity(source)

    def asset_uris(self, options: LdapOptions) -> list[str]:
        from urllib.parse import quote

        # the host part names the Airflow connection: no lookup at parse time
        return [f"ldap://{options.conn_id}/{quote(base)}" for base in options.base_dns]


KIND = LdapKind()
