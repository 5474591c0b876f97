"""The ``service:`` block of a source (how an in-place restore controls the service) and its runner."""

from __future__ import annotations

import sys

import pytest
import yaml

from metabackup.errors import RestoreError, SpecError
from metabackup.service import Service, ServiceControl
from metabackup.spec import load_spec


def spec_with(tmp_path, source: dict, name: str = "svc"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0", "type": "manual",
        "data_path": str(tmp_path / "data"),
        "sources": {"DBService": {"target": {"type": "LocalDir"}, **source}}}))
    return load_spec(path)


PG = {"kind": "postgres", "conn_id": "pg_src"}
STATUS = [sys.executable, "-c", "pass"]


def test_a_systemd_unit_gives_the_three_commands(tmp_path):
    spec = spec_with(tmp_path, {**PG, "service": {"systemd": "postgresql@15-main.service",
                                                  "data_dirs": ["/var/lib/postgresql/15/main"], "owner": "root"}})
    control = spec.source("DBService").service
    assert control.argv("stop") == ["systemctl", "stop", "postgresql@15-main.service"]
    assert control.argv("status") == ["systemctl", "is-active", "--quiet", "postgresql@15-main.service"]
    assert spec.source("DBService").live_dirs() == [("service.data_dirs[0]", "/var/lib/postgresql/15/main")]


@pytest.mark.parametrize("service,field,message", [
    ({"systemd": "pg", "stop": ["/bin/true"], "data_dirs": ["/d"]}, "service.stop", "not both"),
    ({"stop": ["/bin/true"], "start": ["/bin/true"], "data_dirs": ["/d"]}, "service.status", "is required"),
    ({"systemd": "pg;rm -rf /", "data_dirs": ["/d"]}, "service.systemd", "is not a systemd unit name"),
    ({"systemd": "pg", "data_dirs": ["relative/dir"]}, "service.data_dirs[0]", "absolute"),
    ({"systemd": "pg", "data_dirs": ["/a", "/a/b"]}, "service.data_dirs", "one lies inside the other"),
    ({"systemd": "pg", "data_dirs": ["/a", "/b"]}, "service.data_dirs", "exactly one directory"),
    ({"systemd": "pg"}, "service.data_dirs", "exactly one directory"),
    ({"stop": [], "start": ["/bin/true"], "status": ["/bin/true"], "data_dirs": ["/d"]}, "service.stop",
     "must name a program"),
    ({"systemd": "pg", "data_dirs": ["/d"], "owner": "Robert'); DROP"}, "service.owner", "is not an OS user name"),
    ({"systemd": "pg", "data_dirs": ["/d"], "timeout": 0}, "service.timeout", "between 1 and 3600"),
    ({"systemd": "pg", "data_dirs": ["/d"], "restart": ["/bin/true"]}, "service.restart", "unknown field"),
])
def test_the_service_block_is_checked_by_allow_list(tmp_path, service, field, message):
    with pytest.raises(SpecError) as error:
        spec_with(tmp_path, {**PG, "service": service})
    text = str(error.value)
    assert f"sources.DBService.{field}" in text and message in text, text


def test_a_live_directory_may_not_hold_the_backups(tmp_path):
    with pytest.raises(SpecError, match=r"sources.DBService.target.path: .* lies inside the source directory"):
        spec_with(tmp_path, {**PG, "target": {"type": "LocalDir", "path": str(tmp_path / "pg" / "backups")},
                             "service": {"systemd": "pg", "data_dirs": [str(tmp_path / "pg")]}})


def test_a_files_source_restores_its_own_paths(tmp_path):
    with pytest.raises(SpecError, match="files source restores its paths in place; remove data_dirs"):
        spec_with(tmp_path, {"kind": "files", "paths": [str(tmp_path / "etc")],
                             "service": {"systemd": "oms", "data_dirs": [str(tmp_path / "other")]}})


def exiting(code: int) -> list[str]:
    return [sys.executable, "-c", f"import sys; print('status line'); sys.exit({code})"]


@pytest.mark.parametrize("code,state", [(0, "running"), (3, "stopped")])
def test_status_follows_the_lsb_convention(code, state):
    control = ServiceControl(stop=exiting(0), start=exiting(0), status=exiting(code))
    assert Service(control, "DBService").state() == state


@pytest.mark.parametrize("status,message", [
    (exiting(1), r"did not say whether it runs \(exit 1"),
    ([sys.executable, "-c", "import time; time.sleep(5)"], "exit -1.*timed out after 1 s"),
    (["/nonexistent/program"], "exit -2.*could not run /nonexistent/program"),
])
def test_a_status_that_says_neither_stops_the_restore(status, message):
    control = ServiceControl(stop=exiting(0), start=exiting(0), status=status, timeout=1)
    with pytest.raises(RestoreError, match=message):
        Service(control, "DBService").state()


def test_a_stop_that_leaves_the_service_running_is_refused():
    control = ServiceControl(stop=exiting(0), start=exiting(0), status=exiting(0))
    with pytest.raises(RestoreError, match="exited 0 but the status command still says the service runs"):
        Service(control, "DBService").stop()


def test_commands_get_only_the_allow_listed_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_CONN_SECRET", "postgres://u:hunter2@h/db")
    out = tmp_path / "env.txt"
    dump = [sys.executable, "-c", f"import os; open({str(out)!r}, 'w').write('\\n'.join(os.environ))"]
    Service(ServiceControl(stop=dump, start=exiting(0), status=exiting(0)), "DBService").run("stop")
    assert "AIRFLOW_CONN_SECRET" not in out.read_text().split("\n")
