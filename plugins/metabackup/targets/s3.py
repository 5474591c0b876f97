"""S3: backup sets as objects in an S3-compatible bucket (Amazon S3, Huawei Cloud OBS, MinIO, Ceph
RGW, s3proxy), through boto3 directly.

A set's files are the objects ``<prefix>/<task dir>/<name>`` of ``bucket``; a task directory is a
key prefix, nothing is created for it.  Credentials come from an Airflow ``aws`` connection read
through :mod:`metabackup.connections` (login = access key id, password = secret access key; extra
``endpoint_url`` and ``region_name``, optionally ``addressing_style`` (also read from the Amazon
provider's ``config_kwargs.s3``) and ``aws_session_token``; with neither login nor password, boto3's
own credential chain applies, e.g. an instance profile).  boto3 is imported by the target, when
it first talks to the endpoint: a spec naming an S3 target parses without it.  The Amazon provider
is not used: its hook is a thin wrapper around the same boto3 client, and the provider package
pulls in dependencies (pyathena, redshift-connector, sagemaker-studio, ...) this plug-in never uses.

Atomicity.  An S3 object appears whole under its name or not at all: ``put_file`` streams the
staging file as a multipart upload (boto3's transfer manager) and the object exists only once the
upload is completed, then its size is checked (``HeadObject``).  A writer killed mid-upload leaves
an unfinished multipart upload: invisible, but its parts are stored (and billed) until aborted.
:meth:`S3Target.remove_partials` aborts them and reports each as ``.<name>.partial-upload-<id>``,
the partial-file form of the other targets (objects with such a name, written by hand, go too).
A set is visible only once its manifest object exists: the pipeline's verify step writes it last,
and retention deletes it first.

Verification re-reads every byte and compares SHA-256 (the base class's ``verify``): the ETag of a
multipart object is not a digest of its content, and neither S3 nor OBS computes a SHA-256 of a
whole object by itself.

Profiles.  ``s3`` (the default) keeps boto3's defaults.  ``obs`` is for Huawei Cloud OBS: since
boto3 1.36 the client adds a CRC32 checksum to every upload by default, sending the body as an
``aws-chunked`` stream with the checksum in a trailer, and asks for checksums on downloads.  OBS's
S3 API accepts SigV4 only with an unsigned or the plain streaming payload and refuses those
requests; ``request_checksum_calculation`` and ``response_checksum_validation`` set to
``when_required`` make boto3 send the request format OBS accepts (a checksum only where an
operation requires one).  Integrity does not depend on those checksums: verify re-reads the data.

Not applicable here: POSIX file modes (access is the bucket policy's and the key's; keep the
bucket private) and free space (:meth:`S3Target.free_bytes` answers None: S3 cannot tell, so
preflight skips the space check).  Every botocore error becomes a :class:`TargetError` naming
``s3://bucket/prefix`` and the cause; the secret key never appears in a message or a log.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, BinaryIO, ClassVar, Literal

from pydantic import AfterValidator, Field

from metabackup.fields import ConnId, short
from metabackup.naming import is_temp_name, temp_name
from metabackup.targets.base import BackupTarget, StreamReader, TargetConfig, TargetError, check_name, join_uri

log = logging.getLogger(__name__)

MiB = 1024 * 1024
# Parts of 16 MiB (the transfer manager raises the part size when a file would need more than
# 10,000 parts), four at a time; files below 16 MiB go in one PUT.
MULTIPART_THRESHOLD = 16 * MiB
MULTIPART_CHUNKSIZE = 16 * MiB
MAX_CONCURRENCY = 4
UPLOAD_TOKEN = "upload-"  # the token of a partial name standing for an unfinished multipart upload

_BUCKET = re.compile(r"[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]")
_BUCKET_RESERVED_PREFIXES = ("xn--", "sthree-", "amzn-s3-demo-")
_BUCKET_RESERVED_SUFFIXES = ("-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3")
_AUTH_CODES = {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidToken",
               "ExpiredToken", "InvalidSecurity", "AuthorizationHeaderMalformed"}
_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def s3_bucket_name(value: str) -> str:
    """A bucket name by the S3 (and OBS) rules: 3-63 lowercase letters, digits, '.' and '-',
    beginning and ending with a letter or digit, no '..', '.-' or '-.', not an IP address."""
    if not _BUCKET.fullmatch(value):
        raise ValueError(f"{short(value)} is not a valid bucket name: 3 to 63 lowercase letters, digits, '.' and '-', "
                         "beginning and ending with a letter or digit")
    if ".." in value or ".-" in value or "-." in value:
        raise ValueError(f"{short(value)} is not a valid bucket name: no '..', '.-' or '-.'")
    try:
        ipaddress.IPv4Address(value)
    except ValueError:
        pass
    else:
        raise ValueError(f"{short(value)} is not a valid bucket name: it is formatted as an IP address")
    if value.startswith(_BUCKET_RESERVED_PREFIXES) or value.endswith(_BUCKET_RESERVED_SUFFIXES):
        raise ValueError(f"{short(value)} is not a valid bucket name: it uses a prefix or suffix S3 reserves")
    return value


def s3_prefix(value: str) -> str:
    """A key prefix: '/'-separated parts, no leading '/', no '.' or '..' part, no control
    character; repeated and trailing '/' are dropped ("" keeps the sets at the bucket's top)."""
    if value.startswith("/"):
        raise ValueError(f"must not begin with '/' (a key prefix is relative to the bucket): {short(value)}")
    if any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise ValueError(f"must not contain control characters: {short(value)}")
    parts = [p for p in value.split("/") if p]
    if "." in parts or ".." in parts:
        raise ValueError(f"must not contain a '.' or '..' part: {short(value)}")
    norm = "/".join(parts)
    if len(norm.encode()) > 512:
        raise ValueError(f"must be at most 512 bytes long (a key is at most 1024): {short(value)}")
    return norm


BucketName = Annotated[str, AfterValidator(s3_bucket_name), Field(description="an S3 bucket name, e.g. metadata-backups")]
KeyPrefix = Annotated[str, AfterValidator(s3_prefix),
                      Field(description="a key prefix in the bucket, e.g. hadoop/prod (no leading '/', no '..')")]


class S3Config(TargetConfig):
    """``type: S3``: a prefix in an S3-compatible bucket, reached through an Airflow ``aws`` connection."""

    off_cluster: ClassVar[bool] = True

    type: Literal["S3"]
    conn_id: ConnId = Field(description="the Airflow aws connection: access key id (login), secret key (password), "
                                        "extra endpoint_url and region_name")
    bucket: BucketName
    prefix: KeyPrefix = ""
    profile: Literal["s3", "obs"] = Field("s3", description="obs: requests Huawei Cloud OBS accepts (no default "
                                                              "flexible checksums); s3: boto3's defaults")

    def uri(self, task_dir: str = "") -> str:
        root = f"s3://{self.bucket}" + (f"/{self.prefix}" if self.prefix else "")
        return join_uri(root, task_dir)

    def open(self, **kwargs: Any) -> S3Target:
        return S3Target(self, **kwargs)


def partial_name(name: str, upload_id: str) -> str:
    """How an unfinished multipart upload of ``name`` is reported: a partial name of ``name``."""
    return temp_name(name, UPLOAD_TOKEN + upload_id)


class S3Error(TargetError):
    """A failed S3 call; ``code`` is the S3 error code ("NoSuchKey", "403", ...) or ""."""

    def __init__(self, message: str, code: str = ""):
        super().__init__(message)
        self.code = code


class S3Target(BackupTarget):
    def __init__(self, config: S3Config, client_factory=None):
        self.bucket = config.bucket
        self.prefix = config.prefix
        self.conn_id = config.conn_id
        self.profile = config.profile
        self.uri = config.uri()
        self._client_factory = client_factory or self._client_from_connection
        self._client = None
        self._secret = ""
        self.endpoint = "(not connected yet)"

    # -- connection --------------------------------------------------------------------------

    def _client_from_connection(self):
        from metabackup.connections import get_connection

        try:
            import boto3
            from botocore.config import Config
        except ImportError as exc:
            raise TargetError(f"{self.uri}: the S3 target needs boto3, which is not installed ({exc})") from None
        conn = get_connection(self.conn_id)
        extra = conn.extra
        self._secret = conn.password
        if bool(conn.login) != bool(conn.password):
            given, missing = (("access key id (login)", "secret key (password)") if conn.login
                              else ("secret key (password)", "access key id (login)"))
            raise TargetError(f"{self.uri}: connection {self.conn_id!r} has a {given} but no {missing}")
        provider_style = (extra.get("config_kwargs") or {}).get("s3", {}).get("addressing_style")  # the Amazon provider's form
        addressing = extra.get("addressing_style") or provider_style
        options: dict[str, Any] = {"connect_timeout": 10, "read_timeout": 120, "user_agent_extra": "metabackup",
                                   "retries": {"max_attempts": 5, "mode": "standard"}}
        if addressing:
            options["s3"] = {"addressing_style": addressing}
        if self.profile == "obs":
            options.update(request_checksum_calculation="when_required", response_checksum_validation="when_required")
        session = boto3.session.Session()  # a session of its own: nothing shared with other code in the process
        return session.client("s3", endpoint_url=extra.get("endpoint_url") or None,
                              region_name=extra.get("region_name") or None,
                              aws_access_key_id=conn.login or None, aws_secret_access_key=conn.password or None,
                              aws_session_token=extra.get("aws_session_token") or None, config=Config(**options))

    @property
    def client(self):
        if self._client is None:
            try:
                client = self._client_factory()
            except TargetError:
                raise
            except Exception as exc:  # an undefined connection, a bad endpoint_url or region
                raise TargetError(self._scrub(f"{self.uri}: cannot set up an S3 client from connection "
                                              f"{self.conn_id!r}: {exc}")) from None
            self.endpoint = client.meta.endpoint_url
            self._client = client
        return self._client

    def _scrub(self, text: str) -> str:
        return text.replace(self._secret, "***") if self._secret else text

    def _where(self) -> str:
        return f"connection {self.conn_id!r}, endpoint {self.endpoint}, bucket {self.bucket}"

    def _failure(self, what: str, exc: Exception) -> S3Error:
        """A TargetError naming the location, the operation and the cause (with a remedy if known)."""
        code, status = _error_code(exc)
        if code in _AUTH_CODES:
            cause = (f"the endpoint refused the credentials or their rights ({code}): check the access key id (login) "
                     f"and secret key (password) of connection {self.conn_id!r} and its rights on the bucket")
        elif code == "NoSuchBucket" or (code in _NOT_FOUND and what.startswith("checking the bucket")):
            cause = f"bucket {self.bucket} does not exist at {self.endpoint}; create it first"
        else:
            cause = str(exc) + (f" (HTTP {status})" if status and str(status) not in str(exc) else "")
        return S3Error(self._scrub(f"{self.uri}: {what} failed ({self._where()}): {cause}"), code)

    def _call(self, what: str, func, *args, **kwargs):
        """Run one S3 call; a boto3 or botocore failure becomes a TargetError."""
        from boto3.exceptions import Boto3Error
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return func(*args, **kwargs)
        except (BotoCoreError, ClientError, Boto3Error) as exc:
            raise self._failure(what, exc) from None

    def _dir_prefix(self, task_dir: str) -> str:
        check_name("task directory", task_dir)
        return f"{self.prefix}/{task_dir}/" if self.prefix else f"{task_dir}/"

    def _key(self, task_dir: str, name: str) -> str:
        check_name("file", name)
        return self._dir_prefix(task_dir) + name

    # -- BackupTarget ------------------------------------------------------------------------

    def ensure_writable(self, task_dir: str) -> None:
        """The bucket exists and takes a probe object (written and deleted) under the task's prefix."""
        probe = self._key(task_dir, f".write-probe-{os.getpid()}-{secrets.token_hex(4)}")
        client = self.client
        self._call(f"checking the bucket {self.bucket}", client.head_bucket, Bucket=self.bucket)
        self._call(f"writing a probe object {probe}", client.put_object, Bucket=self.bucket, Key=probe, Body=b"")
        self._call(f"deleting the probe object {probe}", client.delete_object, Bucket=self.bucket, Key=probe)

    def free_bytes(self) -> int | None:
        return None  # S3 cannot tell (quotas, if any, are the provider's business)

    def list_names(self, task_dir: str) -> list[str]:
        prefix = self._dir_prefix(task_dir)
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix, Delimiter="/")
        names = self._call(f"listing {prefix}", lambda: [item["Key"][len(prefix):] for page in pages
                                                         for item in page.get("Contents", [])])
        return sorted(names)

    def open_read(self, task_dir: str, name: str) -> BinaryIO:
        key = self._key(task_dir, name)
        try:
            response = self._call(f"reading {key}", self.client.get_object, Bucket=self.bucket, Key=key)
        except S3Error as exc:
            if exc.code in _NOT_FOUND:
                raise TargetError(f"{self.uri}/{task_dir}/{name} is missing") from None
            raise
        body = response["Body"]

        def read(size: int | None) -> bytes:
            from botocore.exceptions import BotoCoreError

            try:
                return body.read(size)
            except BotoCoreError as exc:  # a dropped connection, a short body, a checksum mismatch
                raise TargetError(self._scrub(f"{self.uri}/{task_dir}/{name}: reading failed: {exc}")) from None

        return StreamReader(read, body.close)  # type: ignore[return-value]

    def put_file(self, local: Path, task_dir: str, name: str) -> None:
        """A multipart upload streamed from ``local`` (one PUT below 16 MiB); the object appears
        only when the upload completes, and its size is checked then."""
        from boto3.s3.transfer import TransferConfig

        key = self._key(task_dir, name)
        size = os.path.getsize(local)
        transfer = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_CHUNKSIZE,
                                  max_concurrency=MAX_CONCURRENCY)
        self._call(f"uploading {key}", self.client.upload_file, str(local), self.bucket, key, Config=transfer)
        self._check_size(key, size)

    def put_bytes(self, data: bytes, task_dir: str, name: str) -> None:
        key = self._key(task_dir, name)
        self._call(f"writing {key}", self.client.put_object, Bucket=self.bucket, Key=key, Body=data)
        self._check_size(key, len(data))

    def _check_size(self, key: str, size: int) -> None:
        stored = self._call(f"checking {key}", self.client.head_object, Bucket=self.bucket, Key=key)["ContentLength"]
        if stored != size:
            self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=key)
            raise TargetError(f"{self.uri}: {key} had {stored} bytes after the upload; expected {size}. "
                              "The object was deleted; retry the upload")

    def delete(self, task_dir: str, name: str) -> None:
        key = self._key(task_dir, name)  # deleting a missing key succeeds: idempotent
        self._call(f"deleting {key}", self.client.delete_object, Bucket=self.bucket, Key=key)

    def remove_partials(self, task_dir: str, name: str | None = None) -> list[str]:
        """Abort unfinished multipart uploads under the task's prefix (all, or those of ``name``)
        and delete objects with a partial name."""
        prefix = self._dir_prefix(task_dir)
        removed = []
        for entry in self.list_names(task_dir):
            if is_temp_name(entry) and (name is None or entry.startswith(f".{name}")):
                self.delete(task_dir, entry)
                removed.append(entry)
        for key, upload_id in self._uploads(prefix):
            final = key[len(prefix):]
            if "/" in final or (name is not None and final != name):
                continue
            self._abort(key, upload_id)
            removed.append(partial_name(final, upload_id))
        return removed

    def _uploads(self, prefix: str) -> list[tuple[str, str]]:
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=prefix)
        return self._call(f"listing the unfinished uploads under {prefix}",
                          lambda: [(u["Key"], u["UploadId"]) for page in pages for u in page.get("Uploads", [])])

    def _abort(self, key: str, upload_id: str) -> None:
        try:
            self._call(f"aborting the upload {upload_id} of {key}", self.client.abort_multipart_upload,
                       Bucket=self.bucket, Key=key, UploadId=upload_id)
        except S3Error as exc:
            if exc.code != "NoSuchUpload":  # gone already (completed or aborted)
                raise


def _error_code(exc: BaseException | None) -> tuple[str, int | None]:
    """A botocore ClientError's code and HTTP status; ``("", None)`` for anything else."""
    response = getattr(exc, "response", None)
    if not isinstance(response, dict):
        inner = getattr(exc, "__cause__", None) or getattr(exc, "__context__", None)  # boto3 wraps upload failures
        return _error_code(inner) if inner is not None and inner is not exc else ("", None)
    return str(response.get("Error", {}).get("Code", "")), response.get("ResponseMetadata", {}).get("HTTPStatusCode")

