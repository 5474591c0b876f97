"""The target contract: every backup target passes the same steps, through the config's ``open()``.

put_file / put_bytes then read back equal; list_names shows finished names only (no partial
after a put, nothing of another task directory); delete is idempotent; exists; names and task
directories with '/' or '..' are refused with TargetError and write nothing; remove_partials
sweeps partial files (all, or one final name's); a writer SIGKILLed mid-copy leaves no visible
file and remove_partials cleans up after it; free_bytes is an int > 0 (None allowed where the
adapter says the target cannot tell); files 0600 and directories 0700 whatever the umask (where
the storage has permission bits); verify refuses a wrong checksum, a wrong size, a missing
file and a damaged copy (each copy the target keeps).

Targets come from ``backends.BACKENDS`` (one adapter each); a new target is one more line there.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
import signal
import time
from pathlib import Path

import pytest

from .backends import BACKENDS, Backend
from metabackup.naming import is_temp_name, temp_name
from metabackup.targets import BackupTarget, TargetError

TD = "contract_20261124000000"  # a task directory
OTHER_TD = "other_20261124000000"
NAME = "3.1.0_OMS_20261124030000.tar.gz"


def pytest_generate_tests(metafunc):
    """Every test runs once per backend; the killed-writer test once per copy the backend keeps."""
    if "backend" not in metafunc.fixturenames:
        return
    if "copy" in metafunc.fixturenames:
        pairs = [(b, c) for b in BACKENDS for c in b.copies]
        metafunc.parametrize(("backend", "copy"), pairs, indirect=["backend"], ids=[f"{b.id}-{c}" for b, c in pairs])
    else:
        metafunc.parametrize("backend", BACKENDS, indirect=True, ids=[b.id for b in BACKENDS])


@pytest.fixture()
def backend(request, tmp_path) -> Backend:
    adapter = request.param()
    adapter.spec_target = adapter.make(tmp_path, request)
    return adapter


@pytest.fixture()
def target(backend) -> BackupTarget:
    return backend.spec_target.open()


def local_file(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def read(target: BackupTarget, name: str, task_dir: str = TD) -> bytes:
    with target.open_read(task_dir, name) as handle:
        return handle.read()


def digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def temps(backend: Backend, task_dir: str = TD) -> list[str]:
    return [n for c in backend.copies for n in backend.raw_names(c, task_dir) if is_temp_name(n)]


# ---------------------------------------------------------------------------------------------
def test_contract_put_file_then_read_back_equal(backend, target, tmp_path):
    data = os.urandom(1024 * 1024 + 17)
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", data), TD, NAME)
    assert read(target, NAME) == data
    for copy in backend.copies:
        assert backend.raw_read(copy, TD, NAME) == data, f"the {copy} copy"
    target.verify(TD, NAME, digest(data), len(data))
    replacement = b"a second, shorter version"
    target.put_file(local_file(tmp_path / "b", replacement), TD, NAME)  # an uncommitted copy is replaced
    assert read(target, NAME) == replacement
    assert target.list_names(TD) == [NAME]


def test_contract_put_bytes_then_read_back_equal(backend, target):
    target.ensure_writable(TD)
    manifest = json.dumps({"set": "x", "n": list(range(100))}).encode()
    target.put_bytes(manifest, TD, "m.manifest.json")
    target.put_bytes(b"", TD, "empty.json")
    assert read(target, "m.manifest.json") == manifest
    assert read(target, "empty.json") == b""
    target.put_bytes(b"replaced", TD, "m.manifest.json")
    assert read(target, "m.manifest.json") == b"replaced"
    for copy in backend.copies:
        assert backend.raw_read(copy, TD, "m.manifest.json") == b"replaced", f"the {copy} copy"


def test_contract_list_names_shows_only_finished_names(backend, target, tmp_path):
    assert target.list_names(TD) == [], "a task directory that does not exist lists nothing"
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    target.put_bytes(b"{}", TD, "m.manifest.json")
    target.ensure_writable(OTHER_TD)
    target.put_bytes(b"{}", OTHER_TD, "elsewhere.json")
    assert target.list_names(TD) == sorted([NAME, "m.manifest.json"])
    assert target.list_names(OTHER_TD) == ["elsewhere.json"]
    assert temps(backend) == [] and temps(backend, OTHER_TD) == [], "a finished put leaves no partial anywhere"


def test_contract_delete_is_idempotent(backend, target, tmp_path):
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    target.put_bytes(b"keep", TD, "keep.json")
    target.delete(TD, NAME)
    assert target.list_names(TD) == ["keep.json"]
    for copy in backend.copies:
        assert NAME not in backend.raw_names(copy, TD), f"still in the {copy} copy"
    target.delete(TD, NAME)  # again
    target.delete(TD, "never-written.tar.gz")
    assert target.list_names(TD) == ["keep.json"]


def test_contract_exists(backend, target, tmp_path):
    assert not target.exists(TD, NAME), "in a task directory that does not exist"
    target.ensure_writable(TD)
    assert not target.exists(TD, NAME)
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    assert target.exists(TD, NAME)
    assert not target.exists(OTHER_TD, NAME)
    target.delete(TD, NAME)
    assert not target.exists(TD, NAME)


BAD_NAMES = ["a/b", "../escape", "..", ".", "", "/abs", "x/../../escape"]


def test_contract_refuses_names_with_slash_or_dotdot(backend, target, tmp_path):
    data = b"payload"
    local = local_file(tmp_path / "a", data)
    target.ensure_writable(TD)
    target.put_bytes(b"{}", TD, "ok.json")
    before = backend.sandbox()
    name_ops = {
        "put_file": lambda n: target.put_file(local, TD, n),
        "put_bytes": lambda n: target.put_bytes(data, TD, n),
        "open_read": lambda n: target.open_read(TD, n).close(),
        "delete": lambda n: target.delete(TD, n),
        "verify": lambda n: target.verify(TD, n, digest(data), len(data)),
    }  # (remove_partials' name only filters the partials listed, it never becomes a path)
    dir_ops = {
        "ensure_writable": lambda d: target.ensure_writable(d),
        "list_names": lambda d: target.list_names(d),
        "put_bytes": lambda d: target.put_bytes(data, d, "f.json"),
        "put_file": lambda d: target.put_file(local, d, "f.tar.gz"),
        "delete": lambda d: target.delete(d, "ok.json"),
        "remove_partials": lambda d: target.remove_partials(d),
    }
    escaped = []
    for what, ops in (("name", name_ops), ("task directory", dir_ops)):
        for op, call in ops.items():
            for bad in BAD_NAMES:
                try:
                    call(bad)
                except TargetError:
                    continue
                except Exception as exc:  # noqa: BLE001 - refused, but not as the contract says
                    escaped.append(f"{op}({what} {bad!r}) raised {type(exc).__name__}: {exc}")
                    continue
                escaped.append(f"{op}({what} {bad!r}) was accepted")
    assert backend.sandbox() == before, "a refused name wrote or removed something"
    assert escaped == [], "\n".join(escaped)


def test_contract_remove_partials_sweeps_simulated_partials(backend, target, tmp_path):
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    other = "3.1.0_OMS_20261124040000.tar.gz"
    for copy in backend.copies:
        backend.raw_write(copy, TD, temp_name(NAME, "dead01"), b"half an archive")
        backend.raw_write(copy, TD, temp_name(other, "dead02"), b"half another")
    assert len(temps(backend)) == 2 * len(backend.copies)
    removed = target.remove_partials(TD, other)  # one final name's partials only
    assert sorted(set(removed)) == [temp_name(other, "dead02")]
    assert sorted(set(temps(backend))) == [temp_name(NAME, "dead01")]
    removed = target.remove_partials(TD)  # all
    assert sorted(set(removed)) == [temp_name(NAME, "dead01")]
    assert temps(backend) == []
    assert target.list_names(TD) == [NAME] and read(target, NAME) == b"archive"
    assert target.remove_partials(TD) == [] and target.remove_partials("never_20261124000000") == []


def _put_in_child(spec_target, local: Path, task_dir: str, name: str) -> None:
    """The killed writer: a forked child (the parent already imported what the target needs, so it
    starts writing at once) with a target of its own (no connection shared with the parent)."""
    spec_target.open().put_file(local, task_dir, name)


def test_contract_killed_writer_leaves_no_visible_file(backend, copy, target, tmp_path):
    """put_file in a child process, SIGKILLed once its partial file shows in ``copy``."""
    big = tmp_path / "big.bin"
    block = os.urandom(1024 * 1024)
    with open(big, "wb") as handle:
        for _ in range(backend.kill_size // len(block)):
            handle.write(block)
    target.ensure_writable(TD)  # (and, for LocalHDFS, its client's imports done before the fork)
    child = multiprocessing.get_context("fork").Process(target=_put_in_child, args=(backend.spec_target, big, TD, NAME))
    child.start()
    deadline = time.monotonic() + 120
    caught = None
    while child.exitcode is None and time.monotonic() < deadline:
        seen = [n for n in backend.raw_names(copy, TD) if is_temp_name(n)]
        if seen:
            os.kill(child.pid, signal.SIGKILL)
            caught = seen
            break
        time.sleep(0.001)
    if caught is None and child.exitcode is None:
        os.kill(child.pid, signal.SIGKILL)
    child.join()
    assert caught, f"inconclusive: the writer ended (exit code {child.exitcode}) before a partial showed in the {copy} copy"
    assert child.exitcode == -signal.SIGKILL
    listed = target.list_names(TD)
    assert [n for n in listed if not is_temp_name(n)] == [], f"killed while writing the {copy} copy: {listed}"
    assert not target.exists(TD, NAME)
    left = temps(backend)
    removed = target.remove_partials(TD)
    assert set(left) <= set(removed)
    assert temps(backend) == [] and target.list_names(TD) == []
    # and the next attempt stores the file
    target.put_file(local_file(tmp_path / "small", b"retry"), TD, NAME)
    target.verify(TD, NAME, digest(b"retry"), 5)


def test_contract_free_bytes_is_a_positive_int(backend, target):
    free = target.free_bytes()
    if backend.free_bytes_known:
        assert isinstance(free, int) and not isinstance(free, bool) and free > 0, free
    else:
        assert free is None or (isinstance(free, int) and free > 0), free


def assert_private(backend: Backend, target: BackupTarget, task_dir: str, names: list[str]) -> None:
    for copy in backend.copies:
        if not backend.posix_modes:  # no permission bits to check (S3: access is the bucket policy's)
            assert {backend.file_mode(copy, task_dir, name) for name in names} == {None}
            assert backend.dir_modes(copy, task_dir) is None
            continue
        modes = {name: backend.file_mode(copy, task_dir, name) for name in names}
        assert modes == dict.fromkeys(names, 0o600), f"{copy} copy file modes {({k: oct(v) for k, v in modes.items()})}"
        dirs = backend.dir_modes(copy, task_dir)
        assert dirs == dict.fromkeys(dirs, 0o700), f"{copy} copy directory modes {({k: oct(v) for k, v in dirs.items()})}"


@pytest.fixture()
def umask_000():
    previous = os.umask(0)
    yield
    os.umask(previous)


def test_contract_files_0600_directories_0700(backend, target, tmp_path, umask_000):
    """As the pipeline uploads: ensure_writable, then put_file and put_bytes."""
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    target.put_bytes(b"{}", TD, "m.manifest.json")
    assert_private(backend, target, TD, [NAME, "m.manifest.json"])


def test_contract_put_creates_its_task_directory_0700(backend, target, tmp_path, umask_000):
    """put_file / put_bytes into a task directory not made by ensure_writable."""
    target.put_file(local_file(tmp_path / "a", b"archive"), TD, NAME)
    target.put_bytes(b"{}", OTHER_TD, "m.manifest.json")
    assert target.list_names(TD) == [NAME] and target.list_names(OTHER_TD) == ["m.manifest.json"]
    assert_private(backend, target, TD, [NAME])
    assert_private(backend, target, OTHER_TD, ["m.manifest.json"])


def test_contract_verify_refuses_a_wrong_checksum(backend, target, tmp_path):
    data = os.urandom(50_000)
    target.ensure_writable(TD)
    target.put_file(local_file(tmp_path / "a", data), TD, NAME)
    target.verify(TD, NAME, digest(data), len(data))
    with pytest.raises(TargetError):
        target.verify(TD, NAME, digest(data + b"x"), len(data))
    with pytest.raises(TargetError):
        target.verify(TD, NAME, digest(data), len(data) + 1)
    with pytest.raises(TargetError):
        target.verify(TD, "missing.tar.gz", digest(data), len(data))
    for copy in backend.copies:  # every copy the target keeps is checked
        damaged = bytearray(data)
        damaged[len(damaged) // 2] ^= 0x01
        backend.raw_write(copy, TD, NAME, bytes(damaged))
        with pytest.raises(TargetError):
            target.verify(TD, NAME, digest(data), len(data))
        backend.raw_write(copy, TD, NAME, data)
    target.verify(TD, NAME, digest(data), len(data))
