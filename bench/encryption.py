"""Encryption at rest: encrypted against unencrypted backups, and our decryption against bare AES-GCM.

Generates (fixed seed) the same kind of source tree as ``archive_throughput.py`` (about
``--size-mb`` MiB: small config files, medium logs and dumps, large half-random files), reads it
once (warm-up), then measures, each in a fresh child process:

1. **Backup throughput.**  Two generated task specs over the SAME tree, each with a LocalDir
   target in the temp dir, identical but for the spec-level ``encryption: {key_id: K,
   on_cluster: true}`` of the second (the key is the password of Airflow connection K, given to
   the children as ``AIRFLOW_CONN_<K>``).  Each round runs ``load_spec``, ``SetRun.of``,
   ``pipeline.decide``, ``pipeline.snapshot`` and ``pipeline.archive`` of the ``files`` source,
   alternating the order for ``--repeat`` rounds.  ``airflow.sdk`` is imported before the clock
   starts in both (a worker has it loaded; the encrypted run looks its key up through it).
   Ratio = encrypted MiB/s / unencrypted MiB/s (source MiB over decide+snapshot+archive).
2. **Decryption throughput** over the encrypted archive made by the first encrypted round (its
   staged file and manifest are kept aside): ours = ``sealed.plain_reader`` (unwrap the data key
   from the manifest, :class:`~metabackup.encryption.DecryptingReader`: header check, every chunk's
   tag, the plaintext's SHA-256 and size against the manifest) drained with
   :func:`~metabackup.encryption.drain`; baseline = a bare loop reading the same file in
   ``CHUNK_SIZE + 16`` byte pieces and calling ``AESGCM.decrypt`` on each, with the nonces computed
   before the clock starts.  Also shown, outside the ratio, the bare loop plus a SHA-256 of the
   plaintext (what the manifest check costs by itself).  ``--decrypt-repeat`` alternating rounds.

Prints medians, the ratios, and a summary table ``metric | ours | baseline | ratio | goal | met``
(goal: at least 0.9x for both).  Nothing is asserted on time.

    PYTHONPATH=plugins:. .venv/bin/python bench/encryption.py [--size-mb 256] [--repeat 2]
        [--decrypt-repeat 5] [--dir DIR] [--keep] [--seed N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1] / "plugins"))
import archive_throughput as tree_gen  # noqa: E402  (the tree generator and child runner)

MiB = 1 << 20
SOURCE = "OMS"
EXECUTED = "2026-11-25T01:00:00+00:00"
KEY_ID = "bench_backup_key"
GOAL = 0.9
CHILD_BACKUP = "--_child-backup"
CHILD_DECRYPT = "--_child-decrypt"
DECRYPT_MODES = ("ours", "bare", "bare+sha256")


# ---------------------------------------------------------------------------------------------
# Children (fresh interpreters)
# ---------------------------------------------------------------------------------------------
def child_backup(spec_path: str) -> None:
    """decide -> snapshot -> archive of one spec; timings as JSON on stdout."""
    import airflow.sdk  # noqa: F401  (loaded in a worker already; the encrypted run resolves its key through it)

    from metabackup import pipeline
    from metabackup.spec import load_spec

    spec = load_spec(spec_path)
    run = pipeline.SetRun.of(spec, SOURCE, EXECUTED)
    t0 = time.perf_counter()
    decision = pipeline.decide(run)
    t1 = time.perf_counter()
    snap = pipeline.snapshot(run)
    t2 = time.perf_counter()
    result = pipeline.archive(run)
    t3 = time.perf_counter()
    print(json.dumps({
        "type": decision.type, "files": snap["files_to_archive"], "size": result["size"],
        "archive": str(run.staged_archive), "workdir": str(run.workdir),
        "decide_s": t1 - t0, "snapshot_s": t2 - t1, "archive_s": t3 - t2, "total_s": t3 - t0,
    }))


def child_decrypt(mode: str, archive: str, manifest_path: str) -> None:
    """Read the encrypted ``archive`` to its end, decrypting: ours, or a bare AES-GCM loop."""
    import hashlib
    import struct

    from cryptography.hazmat.primitives.ciphers.aead import AESGCM

    from metabackup.encryption import TAG_SIZE, Header, drain
    from metabackup.keys import KeyRing, parse_key
    from metabackup.manifest import Manifest
    from metabackup.sealed import data_key, plain_reader

    manifest = Manifest.from_json(Path(manifest_path).read_bytes(), origin=manifest_path)
    kek = parse_key(json.loads(os.environ[f"AIRFLOW_CONN_{KEY_ID.upper()}"])["password"], "bench key")
    keys = KeyRing(key_files=[kek])  # the key as a --key-file restore would have it: no Airflow lookup
    size = os.path.getsize(archive)
    if mode == "ours":
        t0 = time.perf_counter()
        with plain_reader(open(archive, "rb"), manifest, keys, archive) as reader:
            drain(reader)
        seconds = time.perf_counter() - t0
        plain = reader.size
    else:
        with open(archive, "rb") as raw:  # the header's fields, to precompute nonces (untimed)
            header = Header.read(raw, archive)
        span = header.chunk_size + TAG_SIZE
        body = size - len(header.raw)
        count = max(1, -(-body // span))
        nonces = [header.prefix + struct.pack(">IB", i, 1 if i == count - 1 else 0) for i in range(count)]
        aad, hashing = header.raw, mode == "bare+sha256"
        digest, plain = hashlib.sha256(), 0
        t0 = time.perf_counter()
        key = data_key(manifest, keys)  # like ours, the timed part starts from the manifest and the key
        header.check(key, manifest.set, archive)
        aead = AESGCM(key)
        with open(archive, "rb") as raw:
            raw.seek(len(aad))
            for nonce in nonces:
                out = aead.decrypt(nonce, raw.read(span), aad)
                plain += len(out)
                if hashing:
                    digest.update(out)
        seconds = time.perf_counter() - t0
        if hashing and (digest.hexdigest(), plain) != tuple(manifest.plaintext):
            raise SystemExit("bare+sha256: the plaintext does not match the manifest")
    if plain != manifest.plaintext[1]:
        raise SystemExit(f"{mode}: decrypted {plain} bytes, the manifest says {manifest.plaintext[1]}")
    print(json.dumps({"mode": mode, "seconds": seconds, "stored": size, "plain": plain}))


# ---------------------------------------------------------------------------------------------
# Parent
# ---------------------------------------------------------------------------------------------
def write_spec(base: Path, tree: Path, name: str, encrypted: bool) -> Path:
    specs = base / "include" / "backup_tasks"
    specs.mkdir(parents=True, exist_ok=True)
    path = specs / f"{name}.yaml"
    encryption = f"encryption:\n  key_id: {KEY_ID}\n  on_cluster: true\n" if encrypted else ""
    path.write_text(f"""\
name: {name}
description: encryption benchmark ({'encrypted' if encrypted else 'unencrypted'})
created: 2026-11-24T00:00:00Z
cluster_version: 3.5.0
timezone: UTC
type: manual
policy: full_always
data_path: {base / 'data' / name}
{encryption}sources:
  {SOURCE}:
    kind: files
    paths:
      - {tree / 'conf'}
      - {tree / 'workspace'}
    exclude: ["*.tmp", "*.swp"]
    target:
      type: LocalDir
      path: {base / 'backup' / name}
      max_backups: 3
""")
    return path


def child_env() -> dict:
    from metabackup.keys import generate_key

    env = {**os.environ}
    root = Path(__file__).resolve().parents[1]
    env["PYTHONPATH"] = os.pathsep.join([str(root / "plugins"), str(root)]
                                        + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env[f"AIRFLOW_CONN_{KEY_ID.upper()}"] = json.dumps({"conn_type": "generic", "password": generate_key()})
    return env


def measure_backup(spec: Path, env: dict, keep_to: Path | None) -> dict:
    _, text, usage = tree_gen.run_child([sys.executable, __file__, CHILD_BACKUP, str(spec)], env)
    data = json.loads(text.strip().splitlines()[-1])
    data["cpu_s"] = usage.ru_utime + usage.ru_stime
    data["maxrss_kb"] = usage.ru_maxrss
    workdir = Path(data["workdir"])
    if keep_to is not None:  # the encrypted archive and its manifest, for the decryption rounds
        keep_to.mkdir(parents=True, exist_ok=True)
        shutil.move(data["archive"], keep_to / Path(data["archive"]).name)
        shutil.move(workdir / "manifest.json", keep_to / "manifest.json")
    shutil.rmtree(workdir, ignore_errors=True)  # the next decide would do it too
    return data


def measure_decrypt(mode: str, archive: Path, manifest: Path, env: dict) -> dict:
    _, text, usage = tree_gen.run_child([sys.executable, __file__, CHILD_DECRYPT, mode, str(archive), str(manifest)], env)
    data = json.loads(text.strip().splitlines()[-1])
    data["maxrss_kb"] = usage.ru_maxrss
    return data


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mb", type=int, default=256, help="source tree size in MiB (default 256)")
    parser.add_argument("--repeat", type=int, default=2, help="alternating backup rounds (default 2)")
    parser.add_argument("--decrypt-repeat", type=int, default=5, help="alternating decryption rounds (default 5)")
    parser.add_argument("--dir", help="work here instead of a new temp directory")
    parser.add_argument("--keep", action="store_true", help="keep the generated tree and outputs")
    parser.add_argument("--seed", type=int, default=20261124)
    parser.add_argument("--quick", action="store_true",
                        help="smaller and shorter, for bench/run_all.py --quick: 32 MiB tree, 1 backup round, 2 decryption rounds (explicit flags still win)")
    if "--quick" in sys.argv[1:]:
        parser.set_defaults(size_mb=32, repeat=1, decrypt_repeat=2)
    args = parser.parse_args()

    base = Path(args.dir).resolve() if args.dir else Path(tempfile.mkdtemp(prefix="metabackup-bench-encryption-"))
    base.mkdir(parents=True, exist_ok=True)
    tree = base / "tree"
    env = child_env()
    try:
        t0 = time.perf_counter()
        if tree.exists():
            shutil.rmtree(tree)
        stats = tree_gen.generate(tree, args.size_mb, args.seed)
        gen_s = time.perf_counter() - t0
        files, source_bytes = tree_gen.tree_bytes(tree)
        print(f"tree: {base}  {source_bytes / MiB:.0f} MiB in {files} files (seed {args.seed}, generated in {gen_s:.1f} s)")
        for kind, s in stats.items():
            print(f"  {kind:<6} {s['files']:>6} files {s['bytes'] / MiB:8.1f} MiB")
        t0 = time.perf_counter()
        tree_gen.warm_up(tree)
        print(f"warm-up read: {time.perf_counter() - t0:.1f} s", flush=True)
        specs = {"plain": write_spec(base, tree, "bench_enc_plain", False),
                 "encrypted": write_spec(base, tree, "bench_enc_sealed", True)}
        kept = base / "encrypted-set"

        # 1. Backup: the same tree, with and without encryption.
        runs: dict[str, list[dict]] = {"plain": [], "encrypted": []}
        for i in range(args.repeat):
            for which in (("plain", "encrypted") if i % 2 == 0 else ("encrypted", "plain")):
                keep_to = kept if which == "encrypted" and not runs["encrypted"] else None
                r = measure_backup(specs[which], env, keep_to)
                if r["files"] != files or r["type"] != "full":
                    raise SystemExit(f"{which} archived {r['files']} files ({r['type']}); the tree has {files}")
                runs[which].append(r)
                print(f"  round {i + 1} {which:<9}: {r['total_s']:.1f} s (decide {r['decide_s']:.2f} s, scan "
                      f"{r['snapshot_s']:.1f} s, archive {r['archive_s']:.1f} s), {r['size'] / MiB:.1f} MiB", flush=True)

        def med(rows: list[dict], key: str) -> float:
            return statistics.median(r[key] for r in rows)

        p_s, e_s = med(runs["plain"], "total_s"), med(runs["encrypted"], "total_s")
        p_mbs, e_mbs = source_bytes / MiB / p_s, source_bytes / MiB / e_s
        print()
        print(f"backup throughput, {source_bytes / MiB:.0f} MiB / {files} files, median of {args.repeat} alternating rounds")
        print(f"{'':<24}{'seconds':>9}{'MiB/s':>9}{'CPU s':>8}{'output MiB':>12}{'decide':>8}{'scan':>7}{'archive':>9}")
        for label, which in (("unencrypted (tar.gz)", "plain"), ("encrypted (AES-GCM)", "encrypted")):
            rows = runs[which]
            print(f"{label:<24}{med(rows, 'total_s'):9.2f}{source_bytes / MiB / med(rows, 'total_s'):9.1f}"
                  f"{med(rows, 'cpu_s'):8.1f}{med(rows, 'size') / MiB:12.1f}{med(rows, 'decide_s'):8.2f}"
                  f"{med(rows, 'snapshot_s'):7.1f}{med(rows, 'archive_s'):9.1f}")
        backup_ratio = e_mbs / p_mbs
        print(f"ratio encrypted/unencrypted throughput {backup_ratio:.3f}x  "
              f"(archive step alone {med(runs['plain'], 'archive_s') / med(runs['encrypted'], 'archive_s'):.3f}x); "
              f"output size {med(runs['encrypted'], 'size') / med(runs['plain'], 'size'):.4f}x")

        # 2. Decryption: our reader against a bare AES-GCM loop over the same file.
        archive = next(p for p in kept.iterdir() if p.name != "manifest.json")
        manifest = kept / "manifest.json"
        stored = archive.stat().st_size
        tree_gen.warm_up(kept)
        dec: dict[str, list[dict]] = {m: [] for m in DECRYPT_MODES}
        for i in range(args.decrypt_repeat):
            order = DECRYPT_MODES[i % 3:] + DECRYPT_MODES[:i % 3]
            for mode in order:
                dec[mode].append(measure_decrypt(mode, archive, manifest, env))
            print(f"  round {i + 1} decrypt: " + ", ".join(f"{m} {dec[m][-1]['seconds']:.3f} s" for m in DECRYPT_MODES),
                  flush=True)
        rate = {m: stored / MiB / statistics.median(r["seconds"] for r in dec[m]) for m in DECRYPT_MODES}
        print()
        print(f"decryption throughput, {archive.name}: {stored / MiB:.1f} MiB stored, "
              f"{-(-stored // (MiB + 16))} chunks of 1 MiB, median of {args.decrypt_repeat} alternating rounds")
        print(f"{'':<46}{'seconds':>9}{'MiB/s':>9}{'peak RSS MiB':>14}")
        labels = {"ours": "ours (plain_reader + DecryptingReader + drain)", "bare": "bare AESGCM.decrypt loop",
                  "bare+sha256": "bare loop + SHA-256 of plaintext (info)"}
        for m in DECRYPT_MODES:
            print(f"{labels[m]:<46}{statistics.median(r['seconds'] for r in dec[m]):9.3f}{rate[m]:9.1f}"
                  f"{max(r['maxrss_kb'] for r in dec[m]) / 1024:14.1f}")
        decrypt_ratio = rate["ours"] / rate["bare"]
        print(f"ratio ours/bare {decrypt_ratio:.3f}x; ours/(bare+sha256) {rate['ours'] / rate['bare+sha256']:.3f}x "
              "(ours checks every tag and the plaintext size; `decrypt` also checks the SHA-256)")

        print()
        print("metric | ours | baseline | ratio | goal | met")
        for metric, ours, baseline, ratio in (
                ("backup MiB/s, encrypted vs unencrypted", e_mbs, p_mbs, backup_ratio),
                ("decrypt MiB/s, ours vs bare AES-GCM", rate["ours"], rate["bare"], decrypt_ratio)):
            print(f"{metric} | {ours:.1f} | {baseline:.1f} | {ratio:.2f} | >= {GOAL} | {'yes' if ratio >= GOAL else 'no'}")
    finally:
        if args.keep:  # the key too (mode 600), so the kept set can be read: --key-file KEY
            key_file = base / "bench-key"
            key_file.write_text(json.loads(env[f"AIRFLOW_CONN_{KEY_ID.upper()}"])["password"] + "\n")
            key_file.chmod(0o600)
            print(f"kept {base} (the encrypted set's key: {key_file})")
        elif args.dir:
            for name in ("tree", "include", "data", "backup", "encrypted-set"):
                shutil.rmtree(base / name, ignore_errors=True)
        else:
            shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == CHILD_BACKUP:
        child_backup(sys.argv[2])
    elif len(sys.argv) == 5 and sys.argv[1] == CHILD_DECRYPT:
        child_decrypt(*sys.argv[2:])
    else:
        main()
