"""Scalars that name things must be YAML strings: an unquoted 3.10 is the float 3.1, yes is true."""

from __future__ import annotations

import pytest
import yaml

from metabackup.spec import SpecError, load_spec

SPEC = """\
name: nightly
created: 2026-11-24T10:00:00+08:00
cluster_version: "3.5.0"
type: manual
sources:
  OMS:
    kind: files
    paths: [/srv/BigData/om-server/conf]
    exclude: ["*.tmp"]
    target: {type: LocalDir, max_backups: 7}
  LdapServer:
    kind: ldap
    conn_id: ldap_main
    base_dns: ["dc=hadoop,dc=com"]
    target: {type: LocalDir, path: ldap}
  NameNode:
    kind: namenode
    target: {type: LocalHDFS, path: /backup/meta, nameservice: backup}
tags: [nightly]
"""


def write(tmp_path, text: str):
    path = tmp_path / "nightly.yaml"
    path.write_text(text)
    return path


def problems(tmp_path, text: str) -> list[tuple[str, str]]:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    assert all(file == str(path) for file, _, _ in failure.value.problems)
    return [(fld, why) for _, fld, why in failure.value.problems]


def test_the_base_spec_is_valid(tmp_path):
    spec = load_spec(write(tmp_path, SPEC))
    assert spec.cluster_version == "3.5.0" and spec.tags == ("nightly",)


def test_unquoted_version_3_10_is_refused_with_a_hint_to_quote_it(tmp_path):
    # the old reader accepted it and silently made it "3.1"
    rows = problems(tmp_path, SPEC.replace('cluster_version: "3.5.0"', "cluster_version: 3.10"))
    assert rows == [("cluster_version", 'must be a string, got float 3.1 (YAML reads 3.10 as a number); '
                                        'quote it: write cluster_version: "3.10"')]


def test_integer_version_is_refused(tmp_path):
    rows = problems(tmp_path, SPEC.replace('cluster_version: "3.5.0"', "cluster_version: 3"))
    assert rows == [("cluster_version", 'must be a string, got int 3 (YAML reads 3 as a number); '
                                        'quote it: write cluster_version: "3"')]


def test_quoted_version_3_10_stays_3_10(tmp_path):
    spec = load_spec(write(tmp_path, SPEC.replace('cluster_version: "3.5.0"', 'cluster_version: "3.10"')))
    assert spec.cluster_version == "3.10"


@pytest.mark.parametrize(("old", "new", "field", "hint"), [
    ("name: nightly", "name: 2024", "name", 'quote it: write name: "2024"'),
    ("name: nightly", "name: yes", "name", 'quote it: write name: "yes"'),
    ("type: manual", "type: manual\ntimezone: 0700", "timezone", 'YAML reads 0700 as a number); quote it: write timezone: "0700"'),
    ("type: manual", "type: manual\nqueue: 1.0e+3", "queue", 'write queue: "1.0e+3"'),
    ("type: manual", "type: manual\ndata_path: 2024-01-01", "data_path", 'write data_path: "2024-01-01"'),
    ("type: manual", "type: manual\nstaging_dir: 0x10", "staging_dir", 'write staging_dir: "0x10"'),
    ("conn_id: ldap_main", "conn_id: 12", "sources.LdapServer.conn_id", 'write conn_id: "12"'),
    ("kind: namenode", "kind: namenode\n    nameservice: 1.5", "sources.NameNode.nameservice",
     'write nameservice: "1.5"'),
    ("path: ldap", "path: 2026", "sources.LdapServer.target.path", 'write path: "2026"'),
    ("nameservice: backup}", "nameservice: 7, conn_id: off}",
     "sources.NameNode.target.nameservice", 'write nameservice: "7"'),
    ("nameservice: backup}", "nameservice: backup, conn_id: off}", "sources.NameNode.target.conn_id",
     'YAML reads off as true or false); quote it: write conn_id: "off"'),
    ("[/srv/BigData/om-server/conf]", "[/srv/BigData/om-server/conf, 1.0]", "sources.OMS.paths[1]",
     'quote it: write "1.0"'),
    ('["*.tmp"]', '["*.tmp", 10]', "sources.OMS.exclude[1]", 'write "10"'),
    ('["dc=hadoop,dc=com"]', "[1]", "sources.LdapServer.base_dns[0]", 'write "1"'),
    ("tags: [nightly]", "tags: [2026]", "tags[0]", 'write "2026"'),
])
def test_names_read_as_numbers_booleans_or_dates_get_a_quoting_hint(tmp_path, old, new, field, hint):
    text = SPEC.replace(old, new)
    assert text != SPEC
    rows = problems(tmp_path, text)
    assert any(fld == field and hint in why and "must be" in why for fld, why in rows), rows


def test_a_very_long_number_gets_a_hint_without_the_whole_text(tmp_path):
    digits = "1" * 2000
    rows = problems(tmp_path, SPEC.replace('cluster_version: "3.5.0"', f"cluster_version: {digits}"))
    (fld, why), = rows
    assert fld == "cluster_version" and "put it in double quotes" in why and digits not in why and len(why) < 600


def test_yaml_safe_dump_of_a_string_version_round_trips(tmp_path):
    spec = yaml.safe_load(SPEC) | {"cluster_version": "3.10"}
    path = tmp_path / "nightly.yaml"
    path.write_text(yaml.safe_dump(spec))
    assert load_spec(path).cluster_version == "3.10"
