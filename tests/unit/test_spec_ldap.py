"""Validation of the ldap source kind's options."""

from __future__ import annotations

import pytest
import yaml

from metabackup.spec import SpecError, load_spec


def write(tmp_path, ldap_options: dict):
    path = tmp_path / "dir.yaml"
    path.write_text(yaml.safe_dump({
        "name": "dir", "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "sources": {"LdapServer": {"kind": "ldap", **ldap_options, "target": {"type": "LocalDir"}}}}))
    return path




def test_valid_ldap_source_and_its_defaults(tmp_path):
    spec = load_spec(write(tmp_path, {"conn_id": "ldap_main", "base_dns": ["dc=hadoop,dc=com"]}))
    options = spec.source("LdapServer").options.model_dump(mode="json")
    assert options == {"conn_id": "ldap_main", "base_dns": ["dc=hadoop,dc=com"], "change_method": "auto",
                       "page_size": 500, "include_config": True, "accesslog_base": "cn=accesslog", "digest_index": "delta",
                       "method": "protocol", "slapd_conf": None, "slapd_config_dir": None,
                       "restore_config": False}


@pytest.mark.parametrize(("options", "field", "reason"), [
    ({"base_dns": ["dc=x"]}, "sources.LdapServer.conn_id", "is required"),
    ({"conn_id": "bad id!", "base_dns": ["dc=x"]}, "sources.LdapServer.conn_id", "not a valid Airflow connection id"),
    ({"conn_id": "c"}, "sources.LdapServer.base_dns", "is required"),
    ({"conn_id": "c", "base_dns": []}, "sources.LdapServer.base_dns", "at least one base DN"),
    ({"conn_id": "c", "base_dns": ["hadoop.com"]}, "sources.LdapServer.base_dns[0]", "is not a DN"),
    ({"conn_id": "c", "base_dns": ["dc=x"], "change_method": "syncrepl"}, "sources.LdapServer.change_method", "must be one of auto, accesslog, digest"),
    ({"conn_id": "c", "base_dns": ["dc=x"], "page_size": 0}, "sources.LdapServer.page_size", "between 1 and 10000"),
    ({"conn_id": "c", "base_dns": ["dc=x"], "digest_index": "some"}, "sources.LdapServer.digest_index", "must be one of delta, whole"),
    ({"conn_id": "c", "base_dns": ["dc=x"], "include_config": "yes"}, "sources.LdapServer.include_config", "must be true or false"),
    ({"conn_id": "c", "base_dns": ["dc=x"], "password": "s3cret"}, "sources.LdapServer.password", "unknown field"),
])
def test_bad_ldap_options_name_file_field_and_reason(tmp_path, options, field, reason):
    path = write(tmp_path, options)
    with pytest.raises(SpecError) as failure:
        load_spec(path)
    assert any(f == str(path) and fld == field and reason in why for f, fld, why in failure.value.problems), \
        failure.value.problems


@pytest.mark.parametrize(("options", "field", "reason"), [
    ({"method": "slapcat"}, "sources.LdapServer.method", "exactly one of slapd_conf"),
    ({"method": "slapcat", "slapd_conf": "/etc/ldap/slapd.conf", "slapd_config_dir": "/etc/ldap/slapd.d"},
     "sources.LdapServer.method", "exactly one of slapd_conf"),
    ({"method": "slapcat", "slapd_conf": "etc/slapd.conf"}, "sources.LdapServer.slapd_conf", "absolute path"),
    ({"method": "slapcat", "slapd_config_dir": "/etc/ldap/../x"}, "sources.LdapServer.slapd_config_dir", "absolute path"),
    ({"slapd_conf": "/etc/ldap/slapd.conf", "slapd_config_dir": "/etc/ldap/slapd.d"},
     "sources.LdapServer.slapd_config_dir", "give one of slapd_conf"),
    ({"method": "slapdump"}, "sources.LdapServer.method", "must be one of protocol, slapcat"),
    ({"restore_config": True, "slapd_conf": "/etc/ldap/slapd.conf"}, "sources.LdapServer.restore_config",
     "needs slapd_config_dir"),
    ({"restore_config": True, "slapd_config_dir": "/etc/ldap/slapd.d", "include_config": False},
     "sources.LdapServer.restore_config", "needs include_config: true"),
])
def test_slapcat_method_options_are_checked(tmp_path, options, field, reason):
    with pytest.raises(SpecError) as failure:
        load_spec(write(tmp_path, {"conn_id": "c", "base_dns": ["dc=x"], **options}))
    assert any(fld == field and reason in why for _, fld, why in failure.value.problems), failure.value.problems


def test_slapcat_method_with_a_config(tmp_path):
    spec = load_spec(write(tmp_path, {"conn_id": "c", "base_dns": ["dc=x"], "method": "slapcat",
                                      "slapd_config_dir": "/etc/ldap/slapd.d"}))
    options = spec.source("LdapServer").options
    assert (options.method, options.slapd_config_dir, options.slapd_conf) == ("slapcat", "/etc/ldap/slapd.d", None)


def test_in_place_service_block_is_checked_against_the_ldap_options(tmp_path):
    service = {"systemd": "slapd.service", "data_dirs": ["/etc/ldap/slapd.d/db"]}
    with pytest.raises(SpecError) as failure:
        load_spec(write(tmp_path, {"conn_id": "c", "base_dns": ["dc=x"], "slapd_config_dir": "/etc/ldap/slapd.d",
                                   "restore_config": True, "service": service}))
    rows = {fld: why for _, fld, why in failure.value.problems}
    assert "one is or lies inside the other" in rows["sources.LdapServer.service.data_dirs[0]"], rows
    spec = load_spec(write(tmp_path, {"conn_id": "c", "base_dns": ["dc=x"], "slapd_config_dir": "/etc/ldap/slapd.d",
                                      "restore_config": True, "service": {**service, "data_dirs": ["/var/lib/ldap"]}}))
    assert spec.source("LdapServer").live_dirs() == [("service.data_dirs[0]", "/var/lib/ldap"),
                                                     ("slapd_config_dir", "/etc/ldap/slapd.d")]
