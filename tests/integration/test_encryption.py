"""Encryption at rest, end to end without a scheduler: copies that keep sets under another key (or
none), key rotation (also killed half-way and resumed), verification of a set whose key is gone,
a disaster restore on a "machine" without Airflow, and the key kept out of argv, output and files."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pendulum
import pytest
import yaml

from metabackup import rotation
from metabackup.keys import generate_key
from metabackup.restore import execute_plan, restore_source, verified_plan
from metabackup.sources.files import iter_tree
from metabackup.spec import load_spec
from metabackup.verification import VerificationFailed, read_record, verify_sets

from conftest import REPO, backup_once

T0 = pendulum.datetime(2026, 11, 24, 3, tz="UTC")


def set_key(monkeypatch, key_id: str, key: str) -> None:
    monkeypatch.setenv(f"AIRFLOW_CONN_{key_id.upper()}", json.dumps({"conn_type": "generic", "password": key}))


def make_spec(tmp_path: Path, name: str, **top) -> tuple[Path, Path]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True, exist_ok=True)
    (src / "a.conf").write_text("a=1\n")
    (src / "sub" / "b.bin").write_bytes(os.urandom(300_000))
    sources = top.pop("sources", None) or {"OMS": {"kind": "files", "paths": [str(src)],
                                                   "target": {"type": "LocalDir", "path": str(tmp_path / "bk")}}}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "created": "2026-11-24T00:00:00Z", "cluster_version": "3.1.0",
                                    "type": "manual", "policy": "full_then_incremental",
                                    "data_path": str(tmp_path / "data"), "sources": sources, **top}))
    return path, src


def take_chain(spec_path: Path, src: Path, count: int = 3) -> list[tuple[str, dict]]:
    """``count`` sets (a full, then incrementals), each with the tree it captured."""
    spec = load_spec(spec_path)
    taken = []
    for n in range(count):
        if n:
            (src / f"n{n}.conf").write_text(f"{n}\n")
        outcome = backup_once(spec, "OMS", T0.add(hours=n))
        taken.append((outcome["stem"], dict(iter_tree(src))))
    return taken


def restores(spec, stem: str, tree: dict, dest: Path, location: str | None = None) -> None:
    """Restore ``stem`` into ``dest``: the source's directory rebuilt there equals ``tree``."""
    result = restore_source(spec, "OMS", dest, stem, location=location)
    assert result["set"] == stem
    source_dir = spec.source("OMS").options.paths[0]
    assert dict(iter_tree(dest / source_dir.lstrip("/"))) == tree, f"restore of {stem} from {result['location']} differs"


# ---------------------------------------------------------------------------------------------
# Copies under another key, or none
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["plain-primary-encrypted-copy", "other-key-copy", "encrypted-primary-plain-copy"])
def test_a_copy_keeps_sets_as_it_is_told_and_restores_from_them(tmp_path, monkeypatch, case):
    key1, key2 = generate_key(), generate_key()
    set_key(monkeypatch, "kek_one", key1)
    set_key(monkeypatch, "kek_two", key2)
    copy = {"type": "LocalDir", "path": str(tmp_path / "site")}
    top: dict = {}
    if case == "plain-primary-encrypted-copy":
        copy["encryption"] = {"key_id": "kek_two"}
    elif case == "other-key-copy":
        top["encryption"] = {"key_id": "kek_one", "on_cluster": True}
        copy["encryption"] = {"key_id": "kek_two"}
    else:
        top["encryption"] = {"key_id": "kek_one", "on_cluster": True}
        copy["encryption"] = {"enabled": False}
    src = tmp_path / "src"
    spec_path, _ = make_spec(tmp_path, "copykeys", sources={"OMS": {
        "kind": "files", "paths": [str(src)], "target": {"type": "LocalDir", "path": str(tmp_path / "bk")},
        "copies": [copy]}}, **top)
    taken = take_chain(spec_path, src)
    spec = load_spec(spec_path)
    task_dir = tmp_path / "site" / spec.task_dir
    primary_dir = tmp_path / "bk" / spec.task_dir
    copy_manifests = [json.loads(p.read_text()) for p in sorted(task_dir.glob("*.manifest.json"))]
    primary_manifests = [json.loads(p.read_text()) for p in sorted(primary_dir.glob("*.manifest.json"))]
    assert len(copy_manifests) == 3
    if case == "encrypted-primary-plain-copy":
        assert all("encryption" not in m and m["archive"]["name"].endswith(".tar.gz") for m in copy_manifests)
        assert all(m["encryption"]["plaintext_sha256"] == c["archive"]["sha256"]
                   for m, c in zip(primary_manifests, copy_manifests))
    else:
        assert all(m["encryption"]["key_id"] == "kek_two" and m["archive"]["name"].endswith(".tar.gz.enc")
                   for m in copy_manifests)
    if case == "other-key-copy":  # the same archive, its data key wrapped twice
        assert [m["archive"] for m in copy_manifests] == [m["archive"] for m in primary_manifests]
        assert all(m["encryption"]["wrapped_key"] != c["encryption"]["wrapped_key"]
                   for m, c in zip(primary_manifests, copy_manifests))
    monkeypatch.delenv("AIRFLOW_CONN_KEK_ONE")  # only the copy's key: the copy alone must restore
    for n, (stem, tree) in enumerate(taken):
        restores(spec, stem, tree, tmp_path / f"r{n}", location="copy 1")


# ---------------------------------------------------------------------------------------------
# Rotation
# ---------------------------------------------------------------------------------------------
@pytest.fixture()
def encrypted_chain(tmp_path, monkeypatch):
    old, new = generate_key(), generate_key()
    set_key(monkeypatch, "kek_old", old)
    set_key(monkeypatch, "kek_new", new)
    spec_path, src = make_spec(tmp_path, "rotating", encryption={"key_id": "kek_old", "on_cluster": True})
    taken = take_chain(spec_path, src, count=4)
    return {"spec": load_spec(spec_path), "taken": taken, "old": old, "new": new, "dir": tmp_path}


def key_ids(chain) -> list[str]:
    folder = chain["dir"] / "bk" / chain["spec"].task_dir
    return [json.loads(p.read_text())["encryption"]["key_id"] for p in sorted(folder.glob("*.manifest.json"))]


def test_rotation_then_retiring_the_old_key_leaves_every_set_restorable(encrypted_chain, monkeypatch, tmp_path):
    spec = encrypted_chain["spec"]
    folder = tmp_path / "bk" / spec.task_dir
    archives = {p.name: p.read_bytes() for p in folder.glob("*.tar.gz.enc")}
    report = rotation.rotate(spec, "kek_new")
    assert report["sources"]["OMS"]["primary"] == {"rewrapped": 4, "already": 0, "unencrypted": 0, "other_key": 0}
    assert key_ids(encrypted_chain) == ["kek_new"] * 4
    assert {p.name: p.read_bytes() for p in folder.glob("*.tar.gz.enc")} == archives, "archives were rewritten"
    monkeypatch.delenv("AIRFLOW_CONN_KEK_OLD")
    for n, (stem, tree) in enumerate(encrypted_chain["taken"]):
        restores(spec, stem, tree, tmp_path / f"after-{n}")
    again = rotation.rotate(spec, "kek_new")  # nothing left to do
    assert again["sources"]["OMS"]["primary"]["already"] == 4


SLOW_MANIFESTS = '''
import time
from metabackup.targets.localdir import LocalDirTarget
_put = LocalDirTarget.put_bytes
def _slow(self, data, task_dir, name):
    _put(self, data, task_dir, name)
    if name.endswith(".manifest.json"):
        time.sleep(1.5)  # room to kill the process between two manifests
LocalDirTarget.put_bytes = _slow
'''


def test_a_rotation_killed_half_way_resumes_and_every_set_stays_restorable(encrypted_chain, monkeypatch, tmp_path):
    """``keys rotate`` in a child process, SIGKILLed after it re-wrapped two of the four sets; the
    sets stay restorable with their own key each, and a rerun finishes the job in the dead one's lease."""
    spec = encrypted_chain["spec"]
    site = tmp_path / "slow"
    site.mkdir()
    (site / "sitecustomize.py").write_text(SLOW_MANIFESTS)
    env = {**os.environ, "PYTHONPATH": f"{site}:{REPO / 'plugins'}"}
    child = subprocess.Popen([sys.executable, "-m", "metabackup", "keys", "rotate", "--spec", spec.path,
                              "--new-key-id", "kek_new"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while key_ids(encrypted_chain).count("kek_new") < 2:
            assert child.poll() is None and time.monotonic() < deadline, "the rotation ended before it was killed"
            time.sleep(0.05)
        child.kill()
    finally:
        child.wait()
    assert sorted(key_ids(encrypted_chain)) == ["kek_new", "kek_new", "kek_old", "kek_old"]
    # mid-rotation every set restores with its own key (through the restore's verify and rebuild: its
    # lease is still the killed rotation's, which a restore would wait for, or `unlock` frees)
    for n, (stem, tree) in enumerate(encrypted_chain["taken"]):
        plan = verified_plan(spec, "OMS", stem, location="primary")
        execute_plan(plan, tmp_path / f"mid-{n}")
        assert dict(iter_tree(tmp_path / f"mid-{n}" / spec.source("OMS").options.paths[0].lstrip("/"))) == tree
    report = rotation.rotate(spec, "kek_new")  # resumes: no waiting for the killed process's lease
    assert report["sources"]["OMS"]["primary"] == {"rewrapped": 2, "already": 2, "unencrypted": 0, "other_key": 0}
    monkeypatch.delenv("AIRFLOW_CONN_KEK_OLD")
    for n, (stem, tree) in enumerate(encrypted_chain["taken"]):
        restores(spec, stem, tree, tmp_path / f"resumed-{n}")


def test_a_rotation_without_the_old_key_reports_every_set_it_could_not_rewrap(encrypted_chain, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_KEK_OLD")
    with pytest.raises(rotation.RotationIncomplete, match=r"(?s)4 set\(s\).*key 'kek_old'.*not available"):
        rotation.rotate(encrypted_chain["spec"], "kek_new")
    assert key_ids(encrypted_chain) == ["kek_old"] * 4


def test_verification_reports_a_set_whose_key_is_gone_as_unrestorable(encrypted_chain, monkeypatch):
    spec = encrypted_chain["spec"]
    assert verify_sets(spec, "OMS")["failed"] == []
    monkeypatch.delenv("AIRFLOW_CONN_KEK_OLD")  # retired without a rotation
    with pytest.raises(VerificationFailed, match="UNRESTORABLE: its key cannot be had.*kek_old") as failed:
        verify_sets(spec, "OMS")
    assert str(failed.value).count("UNRESTORABLE") == 4
    target = spec.source("OMS").target.open()
    record = read_record(target, spec.task_dir, "OMS")["sets"]
    assert all(not entry["ok"] and "UNRESTORABLE" in entry["error"] for entry in record.values())


# ---------------------------------------------------------------------------------------------
# Disaster restore: only the package, the files and the key
# ---------------------------------------------------------------------------------------------
NO_AIRFLOW = '''
import sys
class _NoAirflow:
    def find_spec(self, name, path=None, target=None):
        if name == "airflow" or name.startswith("airflow."):
            raise ImportError("Airflow is not installed on this machine")
        return None
sys.meta_path.insert(0, _NoAirflow())
'''


def without_airflow(args: list[str], tmp_path: Path) -> subprocess.CompletedProcess:
    """``python -m metabackup ARGS`` where importing Airflow fails and no connection is defined."""
    site = tmp_path / "no-airflow"
    site.mkdir(exist_ok=True)
    (site / "sitecustomize.py").write_text(NO_AIRFLOW)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env["PYTHONPATH"] = f"{site}:{REPO / 'plugins'}"
    return subprocess.run([sys.executable, "-m", "metabackup", *args], capture_output=True, text=True, env=env,
                          timeout=300)


def test_disaster_restore_from_a_directory_of_files_and_a_key_file_without_airflow(encrypted_chain, tmp_path):
    spec = encrypted_chain["spec"]
    rescue = tmp_path / "rescue"
    import shutil

    shutil.copytree(tmp_path / "bk" / spec.task_dir, rescue / spec.task_dir)  # e.g. fetched from an object store
    shutil.rmtree(tmp_path / "bk")  # the cluster's copy is gone
    key_file = tmp_path / "kek_old.key"
    key_file.write_text(encrypted_chain["old"] + "\n")
    key_file.chmod(0o600)
    probe = without_airflow(["restore", "--help"], tmp_path)
    assert probe.returncode == 0, probe.stderr
    check = subprocess.run([sys.executable, "-c", NO_AIRFLOW + "import airflow"], capture_output=True, text=True)
    assert check.returncode != 0 and "not installed" in check.stderr, "the guard does keep Airflow out"

    stem, tree = encrypted_chain["taken"][-1]
    dest = tmp_path / "restored"
    done = without_airflow(["restore", "--spec", spec.path, "--source", "OMS", "--dest", str(dest),
                            "--from-dir", str(rescue / spec.task_dir), "--key-file", str(key_file)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["chain"] == [s for s, _ in encrypted_chain["taken"]]
    assert dict(iter_tree(dest / spec.source("OMS").options.paths[0].lstrip("/"))) == tree

    archive = rescue / spec.task_dir / f"{stem}.tar.gz.enc"
    out = tmp_path / "plain.tar.gz"
    done = without_airflow(["decrypt", "--key-file", str(key_file), str(archive), str(out)], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "every chunk authenticated" in done.stderr
    listing = subprocess.run(["tar", "-tzf", str(out)], capture_output=True, text=True)
    assert listing.returncode == 0 and listing.stdout, "decrypt writes a .tar.gz that tar reads"
    assert (out.stat().st_mode & 0o777) == 0o600

    wrong = tmp_path / "wrong.key"
    wrong.write_text(generate_key())
    wrong.chmod(0o600)
    done = without_airflow(["decrypt", "--key-file", str(wrong), str(archive), str(tmp_path / "never.tar.gz")], tmp_path)
    assert done.returncode == 1 and "key 'kek_old'" in done.stderr and "no key file given matches it" in done.stderr
    assert not (tmp_path / "never.tar.gz").exists()

    damaged = bytearray(archive.read_bytes())
    damaged[len(damaged) // 2] ^= 1
    archive.write_bytes(bytes(damaged))
    done = without_airflow(["decrypt", "--key-file", str(key_file), str(archive), str(tmp_path / "never.tar.gz")],
                           tmp_path)
    assert done.returncode == 1 and "failed authentication" in done.stderr, done.stderr
    assert not (tmp_path / "never.tar.gz").exists(), "a tampered archive must not leave a decrypted file"


# ---------------------------------------------------------------------------------------------
# Secrecy: argv, output, files
# ---------------------------------------------------------------------------------------------
def forms(key: str) -> list[bytes]:
    raw = base64.b64decode(key)
    return [key.encode(), raw.hex().encode(), raw]


@pytest.mark.parametrize("how", ["connection", "key_command"])
def test_the_key_never_reaches_argv_output_or_files(tmp_path, how):
    key = generate_key()
    env = {**os.environ, "PYTHONPATH": str(REPO / "plugins")}
    if how == "connection":
        env["AIRFLOW_CONN_SECRET_KEK"] = json.dumps({"conn_type": "generic", "password": key})
        encryption = {"key_id": "secret_kek", "on_cluster": True}
    else:
        script = tmp_path / "get-key"
        vault = tmp_path / "vault"
        vault.write_text(key)
        vault.chmod(0o600)
        script.write_text(f"#!/bin/sh\nsleep 1\nexec cat {vault}\n")  # slow enough to be seen by ps under load
        script.chmod(0o700)
        encryption = {"key_id": "secret_kek", "key_command": [str(script)], "on_cluster": True}
    spec_path, src = make_spec(tmp_path, "secret", encryption=encryption)
    seen_args: list[str] = []
    stop = threading.Event()

    def watch_ps() -> None:
        while not stop.is_set():
            listing = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True).stdout
            seen_args.append(listing)
            time.sleep(0.05)

    watcher = threading.Thread(target=watch_ps)
    watcher.start()
    try:
        outputs = []
        for n in range(2):
            if n:
                (src / "more.conf").write_text("more\n")
            run = subprocess.run([sys.executable, "-m", "metabackup", "backup", "--spec", str(spec_path)],
                                 capture_output=True, env=env, timeout=300)
            assert run.returncode == 0, run.stderr.decode()
            outputs += [run.stdout, run.stderr]
        verify = subprocess.run([sys.executable, "-m", "metabackup", "list", "--spec", str(spec_path)],
                                capture_output=True, env=env, timeout=300)
        outputs += [verify.stdout, verify.stderr]
    finally:
        stop.set()
        watcher.join()
    assert any(b"encrypted with key secret_kek" in text for text in outputs) and len(seen_args) > 5
    assert any("metabackup backup" in listing for listing in seen_args), "ps saw the backup runs"
    if how == "key_command":
        assert any(str(tmp_path / "get-key") in listing for listing in seen_args), "ps saw the key_command run"
    files = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file() and p.name != "vault"]
    manifests = [p.read_bytes() for p in tmp_path.rglob("*.manifest.json")]
    assert len(manifests) == 2 and all(b'"key_id": "secret_kek"' in m for m in manifests)
    for form in forms(key):
        assert not any(form in text for text in outputs), "the key reached the command's output"
        assert not any(form.decode("latin-1") in listing for listing in seen_args), "the key reached a process's argv"
        assert not any(form in data for data in files), "the key reached a file (manifest, staging, archive)"
