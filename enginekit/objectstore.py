"""The object-store client: publishes engine bundles to S3-compatible storage and moves channel pointers.

Shared by the publish stage and the serving process, so it imports neither Prefect nor MLflow, and it does
nothing at import time (boto3 is imported when the first client is built).

Layout under ``s3://BUCKET/PREFIX/MODEL/`` (the contract in the project's design notes)::

    versions/VERSION/<every file of the manifest>   immutable; each object written with If-None-Match: *
    versions/VERSION/manifest.json                  written LAST: its presence marks the version complete
    channels/CHANNEL.json                           which version a channel serves; compare-and-swap writes
    history/<UTC stamp>-CHANNEL-VERSION.json        append-only record of every channel move

Ordering and failure semantics of a channel move (``ObjectStore.move_channel``):

1. The target version's ``manifest.json`` must exist (so every file was uploaded and verified before it,
   see ``publish_version``), its bundle digest must match the caller's expectation when one is given, and
   every file it lists must exist with the listed size (and SHA-256 where the server keeps one).
2. The pointer is written with a condition: ``If-Match: <ETag the caller read>``, or ``If-None-Match: *``
   when the caller saw no pointer. A 412 means someone else moved the channel: ``ChannelConflictError``
   names what the channel points to now, and nothing else is written.
3. Only then is the history record written (``If-None-Match: *``). History therefore holds only moves
   that really happened, never intents that lost a race. If the process dies between 2 and 3, nothing is
   lost: the pointer itself carries the whole move record (previous version, reason, actor, time and the
   key its history record must have), and the next move of that channel first writes any missing record
   of the move it replaces. A failure to write history is logged as a warning, not raised, because the
   channel did move and raising would make the caller retry a move that already succeeded.

Credentials come only from the standard AWS chain (environment, shared credentials/config files,
instance roles); ``credentials_file`` and ``aws_profile`` only point botocore at a file and a profile.
This module never reads, stores or logs a secret.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import re
import shutil
import tempfile
import threading
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enginekit.bundle import (
    MANIFEST_NAME,
    BundleError,
    Manifest,
    parse_manifest,
    sha256_file,
    verify_bundle,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

POINTER_SCHEMA_VERSION = 1
CHANNEL_ABSENT = "absent"
"""Pass as ``expected_etag`` to ``move_channel`` when ``read_channel`` found no pointer."""

_MIB = 1024 * 1024
_READ_CHUNK_BYTES = _MIB
_MAX_MULTIPART_PARTS = 10_000
"""S3 refuses a multipart upload with more parts than this."""
_MIN_PART_MB = 5
"""S3's smallest allowed part (every part but the last)."""
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
_CREDENTIAL_ERROR_CODES = {
    "SignatureDoesNotMatch",
    "InvalidAccessKeyId",
    "AccessDenied",
    "InvalidToken",
    "ExpiredToken",
    "InvalidClientTokenId",
    "AllAccessDisabled",
    "403",
}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}
_CONDITION_FAILED_CODES = {"PreconditionFailed", "412", "ConditionalRequestConflict"}


# --------------------------------------------------------------------------------------------- settings


class ObjectStoreSettings(BaseModel):
    """Where engine bundles live. Production points this at AWS S3 (or MinIO); the default stack at the
    local SeaweedFS that ``python -m infra.localstack up`` starts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    endpoint_url: str | None = None
    """S3 endpoint, e.g. ``http://127.0.0.1:8333`` for the local stack; None means AWS S3 itself."""
    bucket: str = Field(min_length=3, max_length=63, pattern=r"^[a-z0-9][a-z0-9.-]*[a-z0-9]$")
    """Bucket holding every model's versions, channels and history (S3 naming rules)."""
    prefix: str = "engines"
    """Key prefix inside the bucket; ``""`` puts models at the bucket root."""
    region: str = "us-east-1"
    aws_profile: str | None = None
    """Named profile of the AWS shared files (``int8-local`` for the local stack); None = default chain."""
    credentials_file: Path | None = None
    """An AWS shared-credentials file to use instead of ``~/.aws/credentials`` (the local stack writes
    ``.state/stack/s3-credentials``). Given to botocore as its ``credentials_file`` setting."""
    max_attempts: int = Field(default=5, ge=1, le=20)
    """Total attempts per request, botocore "standard" retry mode (backoff with jitter on throttling,
    5xx and connection errors)."""
    connect_timeout_s: float = Field(default=5.0, gt=0)
    read_timeout_s: float = Field(default=60.0, gt=0)
    multipart_threshold_mb: int = Field(default=64, ge=_MIN_PART_MB)
    """Files at least this large (MiB) are uploaded and downloaded in parts."""
    multipart_chunksize_mb: int = Field(default=16, ge=_MIN_PART_MB)
    """Part size (MiB); S3 needs at least 5 MiB for every part but the last."""
    create_bucket: bool = False
    """Create the bucket if it is missing (local stacks, tests). Off by default: in production a missing
    bucket is a configuration mistake, not something to paper over."""

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint_is_http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        value = value.rstrip("/")
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"endpoint_url {value!r} must start with http:// or https:// (or be null for AWS)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix_is_clean(cls, value: str) -> str:
        value = value.strip("/")
        if value and any(part in ("", ".", "..") for part in value.split("/")):
            raise ValueError(f"prefix {value!r} must be slash-separated names without empty, . or .. parts")
        return value

    def endpoint_label(self) -> str:
        """Human name of the endpoint for messages."""
        return self.endpoint_url or f"AWS S3 ({self.region})"


# ------------------------------------------------------------------------------------------------ errors


class ObjectStoreError(Exception):
    """Something went wrong talking to the object store. The message names the endpoint, bucket and key,
    and says what to do."""


class EndpointUnreachableError(ObjectStoreError):
    """The endpoint refused the connection or timed out."""


class CredentialsError(ObjectStoreError):
    """No credentials, wrong credentials, or credentials without permission."""


class BucketNotFoundError(ObjectStoreError):
    """The configured bucket does not exist."""


class ObjectNotFoundError(ObjectStoreError):
    """An object that must exist is missing."""


class VersionNotFoundError(ObjectNotFoundError):
    """The version has no ``manifest.json``: it was never published, or its upload did not finish."""


class CorruptObjectError(ObjectStoreError):
    """A stored object differs from what the manifest says (size or SHA-256)."""


class VersionConflictError(ObjectStoreError):
    """The version already exists with different content; versions are immutable."""


class ChannelConflictError(ObjectStoreError):
    """Another writer moved the channel since it was read (conditional write failed)."""

    def __init__(self, message: str, *, channel: str, current: ChannelPointer | None) -> None:
        super().__init__(message)
        self.channel = channel
        self.current = current
        """The pointer as it is now (None if the channel has no pointer)."""


class FetchDestinationError(ObjectStoreError):
    """The fetch destination exists and is not the requested version."""


# ------------------------------------------------------------------------------------------------ models


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class StoredObject(_Document):
    key: str
    size: int
    """Bytes."""
    sha256: str
    """Hex SHA-256 of the object's content."""
    verified_by: Literal["checksum", "read_back"]
    """``checksum``: the server's stored SHA-256 (it validated it on upload); ``read_back``: downloaded
    and hashed because the server keeps no full-object SHA-256 (e.g. multipart or foreign uploads)."""
    uploaded: bool
    """False when an identical object was already there (an idempotent retry)."""


class PublishedVersion(_Document):
    model: str
    version: str
    endpoint: str
    bucket: str
    version_prefix: str
    """Key prefix of the version, ending in ``/``."""
    manifest_key: str
    manifest_sha256: str
    """SHA-256 of the stored ``manifest.json`` bytes."""
    bundle_digest: str
    """``Manifest.digest()``: identifies the bundle's whole content."""
    objects: list[StoredObject]
    """Every file of the bundle, then the manifest, all verified after upload."""

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.version_prefix}"


class ChannelPointer(_Document):
    """``channels/CHANNEL.json``: which version a channel serves, and the move that made it so."""

    schema_version: int = POINTER_SCHEMA_VERSION
    model: str
    channel: str
    version: str
    bundle_digest: str
    """``Manifest.digest()`` of the version; a server refuses a fetched bundle with another digest."""
    manifest_key: str
    manifest_sha256: str
    """SHA-256 of the stored ``manifest.json`` bytes."""
    previous_version: str | None
    """What the channel served before this move (None for its first pointer)."""
    updated_at: str
    """UTC, ISO 8601 with microseconds."""
    reason: str
    actor: str | None = None
    """Who moved it (a flow run, a user name)."""
    history_key: str | None = None
    """Key of the history record of this move, so a record lost to a crash can be written later."""
    extra: dict[str, str] = Field(default_factory=dict)
    """Free-form links, e.g. ``mlflow_model_version`` and ``mlflow_model_uri``."""
    etag: str | None = Field(default=None, exclude=True)
    """ETag of the stored pointer this was read from (not part of the document); pass it to
    ``move_channel(expected_etag=...)``."""


class HistoryRecord(_Document):
    """``history/<stamp>-CHANNEL-VERSION.json``: one channel move, what served when."""

    schema_version: int = POINTER_SCHEMA_VERSION
    model: str
    channel: str
    from_version: str | None
    to_version: str
    bundle_digest: str
    reason: str
    actor: str | None = None
    moved_at: str
    extra: dict[str, str] = Field(default_factory=dict)

    @classmethod
    def of_pointer(cls, pointer: ChannelPointer) -> HistoryRecord:
        """The record of the move that produced ``pointer``: derived only from it, so a late write
        (after a crash) produces the very same record."""
        return cls(
            model=pointer.model,
            channel=pointer.channel,
            from_version=pointer.previous_version,
            to_version=pointer.version,
            bundle_digest=pointer.bundle_digest,
            reason=pointer.reason,
            actor=pointer.actor,
            moved_at=pointer.updated_at,
            extra=pointer.extra,
        )


# ----------------------------------------------------------------------------------------------- helpers


def _check_name(kind: str, value: str) -> str:
    """Model, version and channel names become key segments: keep them to one safe segment."""
    if not _NAME_PATTERN.match(value) or ".." in value:
        raise ValueError(
            f"{kind} {value!r} is not a valid name: use 1-128 letters, digits, '_', '.', '-', "
            "starting with a letter or digit"
        )
    return value


def _hex_to_base64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _base64_to_hex(checksum: str) -> str | None:
    """Full-object SHA-256 from an S3 checksum header; None for a composite (multipart) checksum."""
    if "-" in checksum:
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == hashlib.sha256().digest_size else None


def _content_type(key: str) -> str:
    return "application/json" if key.endswith(".json") else "application/octet-stream"


def _error_code(error: Exception) -> tuple[str, int | None]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def _is_condition_failed(error: Exception) -> bool:
    code, status = _error_code(error)
    return code in _CONDITION_FAILED_CODES or status == 412


def _is_not_found(error: Exception) -> bool:
    code, status = _error_code(error)
    return code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket")


def _history_stamp(moment: datetime) -> str:
    """Sortable UTC stamp for history keys (lexicographic order == time order)."""
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


# ----------------------------------------------------------------------------------------------- client


class ObjectStore:
    """Publishes, verifies and fetches bundles, and moves channel pointers, in one bucket.

    Thread-safe: the boto3 client is created once, lazily, and boto3 clients may be shared by threads.
    """

    def __init__(self, settings: ObjectStoreSettings) -> None:
        self.settings = settings
        self._client: BaseClient | None = None
        self._client_lock = threading.Lock()

    # ---- keys

    def model_prefix(self, model: str) -> str:
        parts = [self.settings.prefix, _check_name("model", model)]
        return "/".join(part for part in parts if part)

    def version_prefix(self, model: str, version: str) -> str:
        return f"{self.model_prefix(model)}/versions/{_check_name('version', version)}/"

    def manifest_key(self, model: str, version: str) -> str:
        return self.version_prefix(model, version) + MANIFEST_NAME

    def channel_key(self, model: str, channel: str) -> str:
        return f"{self.model_prefix(model)}/channels/{_check_name('channel', channel)}.json"

    def history_prefix(self, model: str) -> str:
        return f"{self.model_prefix(model)}/history/"

    def uri(self, key: str = "") -> str:
        return f"s3://{self.settings.bucket}/{key}"

    # ---- client and error translation

    @property
    def client(self) -> BaseClient:
        """The boto3 S3 client, built on first use."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._build_client()
        return self._client

    def _build_client(self) -> BaseClient:
        import boto3
        import botocore.session
        from botocore.config import Config
        from botocore.exceptions import ProfileNotFound

        settings = self.settings
        core_session = botocore.session.Session()
        if settings.credentials_file is not None:
            credentials_file = settings.credentials_file.expanduser()
            if not credentials_file.is_file():
                raise CredentialsError(
                    f"object store {settings.endpoint_label()}: credentials_file {credentials_file} does not "
                    "exist. For the local stack run `python -m infra.localstack up` (it writes that file); "
                    "otherwise fix publish.store.credentials_file or set it to null to use the AWS chain."
                )
            # The documented botocore setting (same as AWS_SHARED_CREDENTIALS_FILE); botocore reads it.
            core_session.set_config_variable("credentials_file", str(credentials_file))
        config = Config(
            region_name=settings.region,
            signature_version="s3v4",
            retries={"mode": "standard", "max_attempts": settings.max_attempts},
            connect_timeout=settings.connect_timeout_s,
            read_timeout=settings.read_timeout_s,
            # Custom endpoints (SeaweedFS, MinIO) rarely have wildcard DNS for virtual-host buckets.
            s3={"addressing_style": "path" if settings.endpoint_url else "auto"},
            user_agent_extra="int8-search-pipeline",
        )
        try:
            session = boto3.session.Session(
                botocore_session=core_session,
                profile_name=settings.aws_profile,
                region_name=settings.region,
            )
            return session.client("s3", endpoint_url=settings.endpoint_url, config=config)
        except ProfileNotFound as error:
            # The profile comes from publish.store.aws_profile or, when that is null, from AWS_PROFILE.
            where = settings.credentials_file or "~/.aws/credentials and ~/.aws/config"
            raise CredentialsError(
                f"object store {settings.endpoint_label()}: {error} (looked in {where}). Add the profile, "
                "fix publish.store.aws_profile, or unset AWS_PROFILE."
            ) from None

    def _translate(self, error: Exception, action: str, key: str | None = None) -> ObjectStoreError:
        """Turn a botocore exception into an ``ObjectStoreError`` that names where and what to do."""
        from botocore.exceptions import (
            ClientError,
            ConnectionClosedError,
            ConnectTimeoutError,
            EndpointConnectionError,
            NoCredentialsError,
            PartialCredentialsError,
            ProfileNotFound,
            ReadTimeoutError,
        )

        endpoint = self.settings.endpoint_label()
        where = f"{endpoint}, bucket {self.settings.bucket!r}" + (f", key {key!r}" if key else "")
        if isinstance(error, ObjectStoreError):
            return error
        if isinstance(error, EndpointConnectionError | ConnectTimeoutError | ConnectionClosedError):
            return EndpointUnreachableError(
                f"cannot reach the object store while {action} ({where}) after "
                f"{self.settings.max_attempts} attempt(s): {error}. Check that the endpoint is running and "
                "reachable (local stack: `python -m infra.localstack up`, then `... status`) and that "
                "publish.store.endpoint_url is right."
            )
        if isinstance(error, ReadTimeoutError):
            return EndpointUnreachableError(
                f"the object store did not answer within {self.settings.read_timeout_s} s while {action} "
                f"({where}). Check the server's health, or raise publish.store.read_timeout_s."
            )
        if isinstance(error, NoCredentialsError | PartialCredentialsError | ProfileNotFound):
            return CredentialsError(
                f"no usable AWS credentials while {action} ({where}): {error}. Set AWS_PROFILE / "
                "AWS_ACCESS_KEY_ID+AWS_SECRET_ACCESS_KEY, or publish.store.aws_profile and "
                "credentials_file (local stack: `python -m infra.localstack up` prints them)."
            )
        if isinstance(error, ClientError):
            code, status = _error_code(error)
            message = error.response.get("Error", {}).get("Message", "")
            detail = f"{code or status}" + (f": {message}" if message else "")
            if code in _CREDENTIAL_ERROR_CODES or status == 403:
                return CredentialsError(
                    f"the object store rejected the credentials while {action} ({where}): {detail}. The "
                    "access key is unknown, the secret is wrong, or the identity lacks permission on this "
                    "bucket. Check AWS_PROFILE / publish.store.aws_profile and credentials_file (local "
                    "stack: use the file and profile `python -m infra.localstack status` prints)."
                )
            if code == "NoSuchBucket" or (status == 404 and key is None):
                return BucketNotFoundError(
                    f"bucket {self.settings.bucket!r} does not exist at {endpoint} (while {action}). Create "
                    "it, fix publish.store.bucket, or set publish.store.create_bucket: true."
                )
            if _is_not_found(error):
                return ObjectNotFoundError(f"object not found while {action} ({where}): {detail}.")
            return ObjectStoreError(f"the object store failed while {action} ({where}): {detail}.")
        return ObjectStoreError(f"object store client error while {action} ({where}): {error}")

    def _call(self, action: str, key: str | None, operation: str, **params: Any) -> dict[str, Any]:
        """One S3 call with errors translated; conditional failures are left to the caller."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return getattr(self.client, operation)(Bucket=self.settings.bucket, **params)
        except ClientError as error:
            if _is_condition_failed(error):
                raise
            raise self._translate(error, action, key) from error
        except BotoCoreError as error:
            raise self._translate(error, action, key) from error

    # ---- bucket

    def ensure_bucket(self) -> None:
        """Check the bucket exists (and that the credentials work); create it if ``create_bucket``."""
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self._call("checking the bucket", None, "head_bucket")
            return
        except BucketNotFoundError:
            if not self.settings.create_bucket:
                raise
        params: dict[str, Any] = {}
        if self.settings.endpoint_url is None and self.settings.region != "us-east-1":
            # AWS wants the region spelled out everywhere except its original one.
            params["CreateBucketConfiguration"] = {"LocationConstraint": self.settings.region}
        try:
            self.client.create_bucket(Bucket=self.settings.bucket, **params)
            logger.info("created bucket %s at %s", self.settings.bucket, self.settings.endpoint_label())
        except ClientError as error:
            if _error_code(error)[0] != "BucketAlreadyOwnedByYou":  # created concurrently by us: fine
                raise self._translate(error, "creating the bucket") from error
        except BotoCoreError as error:
            raise self._translate(error, "creating the bucket") from error

    # ---- reading objects

    def _head(self, key: str, action: str) -> dict[str, Any] | None:
        try:
            return self._call(action, key, "head_object", Key=key, ChecksumMode="ENABLED")
        except ObjectNotFoundError:
            return None

    def _get_bytes(self, key: str, action: str) -> tuple[bytes, str] | None:
        """Content and ETag of a small object, None if it does not exist."""
        try:
            response = self._call(action, key, "get_object", Key=key)
        except ObjectNotFoundError:
            return None
        return response["Body"].read(), response["ETag"]

    def _read_back_sha256(self, key: str, action: str) -> tuple[int, str]:
        response = self._call(action, key, "get_object", Key=key)
        digest = hashlib.sha256()
        size = 0
        for chunk in response["Body"].iter_chunks(_READ_CHUNK_BYTES):
            digest.update(chunk)
            size += len(chunk)
        return size, digest.hexdigest()

    def _stored_digest(self, key: str, action: str, *, read_back: bool) -> tuple[int, str | None, str]:
        """(size, sha256 or None, how) of an object; raises ``ObjectNotFoundError`` if it is missing.

        Uses the server's full-object SHA-256 when it has one; otherwise reads the object back if
        ``read_back``, else returns None for the digest.
        """
        head = self._head(key, action)
        if head is None:
            raise ObjectNotFoundError(
                f"object {self.uri(key)} is missing at {self.settings.endpoint_label()} (while {action})."
            )
        stored = _base64_to_hex(head.get("ChecksumSHA256") or "")
        if stored is not None:
            return int(head["ContentLength"]), stored, "checksum"
        if not read_back:
            return int(head["ContentLength"]), None, "size"
        size, digest = self._read_back_sha256(key, action)
        return size, digest, "read_back"

    def _verify_object(self, key: str, size: int, sha256: str, action: str, uploaded: bool) -> StoredObject:
        stored_size, stored_sha, how = self._stored_digest(key, action, read_back=True)
        if stored_size != size or stored_sha != sha256:
            raise CorruptObjectError(
                f"object {self.uri(key)} at {self.settings.endpoint_label()} does not match the bundle: "
                f"size {stored_size} (expected {size}), sha256 {stored_sha} (expected {sha256}). Something "
                "overwrote or damaged it; publish the bundle again under a new version."
            )
        verified_by: Literal["checksum", "read_back"] = "checksum" if how == "checksum" else "read_back"
        return StoredObject(key=key, size=size, sha256=sha256, verified_by=verified_by, uploaded=uploaded)

    def _read_stored_manifest(self, model: str, version: str, action: str) -> tuple[Manifest, bytes]:
        key = self.manifest_key(model, version)
        found = self._get_bytes(key, action)
        if found is None:
            raise VersionNotFoundError(
                f"version {version!r} of model {model!r} has no {MANIFEST_NAME} at {self.uri(key)} "
                f"({self.settings.endpoint_label()}): it was never published, or its upload did not finish "
                "(the manifest is written last). Publish it first (or again)."
            )
        body, _etag = found
        try:
            manifest = parse_manifest(body.decode("utf-8"), self.uri(key))
        except (BundleError, UnicodeDecodeError) as error:
            raise CorruptObjectError(f"{self.uri(key)} is not a readable manifest: {error}") from None
        return manifest, body

    # ---- uploads

    def _put_small(self, key: str, path: Path, sha256: str) -> None:
        with path.open("rb") as body:
            self._call(
                "uploading",
                key,
                "put_object",
                Key=key,
                Body=body,
                ContentType=_content_type(key),
                # Sending our own SHA-256 makes the server reject a body damaged in transit (BadDigest)
                # and keep the checksum, so verification needs no read-back.
                ChecksumSHA256=_hex_to_base64(sha256),
                IfNoneMatch="*",
            )

    def _put_multipart(self, key: str, path: Path, size: int) -> None:
        """Multipart upload whose completion is conditional (boto3's managed transfer cannot send
        If-None-Match), so a concurrent or earlier upload of the key is never overwritten."""
        from botocore.exceptions import BotoCoreError, ClientError

        part_bytes = self.settings.multipart_chunksize_mb * _MIB
        if -(-size // part_bytes) > _MAX_MULTIPART_PARTS:
            raise ObjectStoreError(
                f"{path} ({size} bytes) needs more than {_MAX_MULTIPART_PARTS} parts of "
                f"{self.settings.multipart_chunksize_mb} MiB; raise publish.store.multipart_chunksize_mb."
            )
        upload = self._call(
            "starting a multipart upload",
            key,
            "create_multipart_upload",
            Key=key,
            ContentType=_content_type(key),
            ChecksumAlgorithm="SHA256",
        )
        upload_id = upload["UploadId"]
        try:
            parts = []
            with path.open("rb") as handle:
                part_number = 1
                while data := handle.read(part_bytes):
                    part_checksum = base64.b64encode(hashlib.sha256(data).digest()).decode("ascii")
                    response = self._call(
                        f"uploading part {part_number}",
                        key,
                        "upload_part",
                        Key=key,
                        UploadId=upload_id,
                        PartNumber=part_number,
                        Body=data,
                        ChecksumSHA256=part_checksum,
                    )
                    parts.append({"PartNumber": part_number, "ETag": response["ETag"], "ChecksumSHA256": part_checksum})
                    part_number += 1
            self._call(
                "completing a multipart upload",
                key,
                "complete_multipart_upload",
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
                IfNoneMatch="*",
            )
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.settings.bucket, Key=key, UploadId=upload_id)
            except (BotoCoreError, ClientError) as abort_error:
                # Not fatal: a bucket lifecycle rule for incomplete uploads reclaims the parts.
                logger.warning("could not abort multipart upload of %s: %s", self.uri(key), abort_error)
            raise

    def _put_immutable(self, key: str, path: Path, size: int, sha256: str) -> bool:
        """Write ``path`` to ``key`` only if the key is free. Returns True if uploaded, False if an
        identical object was already there; raises ``VersionConflictError`` if a different one is."""
        from botocore.exceptions import ClientError

        try:
            if size >= self.settings.multipart_threshold_mb * _MIB:
                self._put_multipart(key, path, size)
            else:
                self._put_small(key, path, sha256)
            return True
        except ClientError as error:
            if not _is_condition_failed(error):
                raise self._translate(error, "uploading", key) from error
        existing_size, existing_sha, _how = self._stored_digest(key, "comparing", read_back=True)
        if existing_size == size and existing_sha == sha256:
            logger.info("%s already holds identical content; keeping it", self.uri(key))
            return False
        raise VersionConflictError(
            f"{self.uri(key)} at {self.settings.endpoint_label()} already exists with different content "
            f"(sha256 {existing_sha}, expected {sha256}): this version already exists with different "
            "content; versions are immutable. Publish the new bundle under a new version."
        )

    # ---- publish

    def publish_version(
        self, model: str, version: str, bundle_dir: Path, manifest: Manifest | None = None
    ) -> PublishedVersion:
        """Upload a verified bundle as ``PREFIX/MODEL/versions/VERSION/`` and verify what was stored.

        Every file is written with If-None-Match: * and ``manifest.json`` last, so a version is either
        complete or invisible to ``list_versions`` and ``move_channel``. Republishing the same bundle is a
        no-op (safe to retry); a different bundle under an existing version raises
        ``VersionConflictError``. ``manifest``, if given, must equal the bundle's own ``manifest.json``.
        Raises ``BundleError`` (before any upload) if the bundle fails ``verify_bundle``.
        """
        bundle_dir = Path(bundle_dir)
        _check_name("model", model)
        _check_name("version", version)
        on_disk = verify_bundle(bundle_dir)
        if manifest is not None and manifest.digest() != on_disk.digest():
            raise BundleError(
                f"the manifest passed for {bundle_dir} differs from its {MANIFEST_NAME}; rewrite the file "
                "with write_manifest before publishing"
            )
        if on_disk.model_name != model:
            raise BundleError(
                f"bundle {bundle_dir} is for model {on_disk.model_name!r}, not {model!r}; publish it under "
                "its own model name"
            )
        self.ensure_bucket()
        digest = on_disk.digest()
        manifest_key = self.manifest_key(model, version)
        manifest_path = bundle_dir / MANIFEST_NAME

        existing = self._get_bytes(manifest_key, "checking for an existing version")
        if existing is not None:
            self._check_same_bundle(model, version, existing[0], digest)
            logger.info("version %s/%s already published; verifying it", model, version)

        objects = []
        for entry in on_disk.files:
            key = self.version_prefix(model, version) + entry.path
            uploaded = existing is None and self._put_immutable(key, bundle_dir / entry.path, entry.size, entry.sha256)
            objects.append((key, entry.size, entry.sha256, uploaded))
        # Written last: its presence is what marks the version complete.
        manifest_uploaded = False
        if existing is None:
            manifest_uploaded = self._put_manifest(model, version, manifest_path, digest)

        verified = [
            self._verify_object(key, size, sha256, "verifying the upload", uploaded)
            for key, size, sha256, uploaded in objects
        ]
        stored_manifest, stored_bytes = self._read_stored_manifest(model, version, "verifying the upload")
        if stored_manifest.digest() != digest:
            raise CorruptObjectError(
                f"{self.uri(manifest_key)} changed during publishing (digest {stored_manifest.digest()}, "
                f"expected {digest}); another publisher is writing this version. Use a new version."
            )
        manifest_sha = hashlib.sha256(stored_bytes).hexdigest()
        verified.append(
            StoredObject(
                key=manifest_key,
                size=len(stored_bytes),
                sha256=manifest_sha,
                verified_by="read_back",
                uploaded=manifest_uploaded,
            )
        )
        logger.info(
            "published %s/%s to %s (%d objects, %d uploaded)",
            model,
            version,
            self.uri(self.version_prefix(model, version)),
            len(verified),
            sum(obj.uploaded for obj in verified),
        )
        return PublishedVersion(
            model=model,
            version=version,
            endpoint=self.settings.endpoint_label(),
            bucket=self.settings.bucket,
            version_prefix=self.version_prefix(model, version),
            manifest_key=manifest_key,
            manifest_sha256=manifest_sha,
            bundle_digest=digest,
            objects=verified,
        )

    def _check_same_bundle(self, model: str, version: str, stored: bytes, digest: str) -> None:
        key = self.manifest_key(model, version)
        try:
            stored_digest = parse_manifest(stored.decode("utf-8"), self.uri(key)).digest()
        except (BundleError, UnicodeDecodeError) as error:
            raise CorruptObjectError(f"{self.uri(key)} is not a readable manifest: {error}") from None
        if stored_digest != digest:
            raise VersionConflictError(
                f"version {version!r} of model {model!r} already exists with different content at "
                f"{self.uri(self.version_prefix(model, version))} ({self.settings.endpoint_label()}; stored "
                f"bundle digest {stored_digest}, yours {digest}); versions are immutable. Publish under a "
                "new version."
            )

    def _put_manifest(self, model: str, version: str, path: Path, digest: str) -> bool:
        from botocore.exceptions import ClientError

        key = self.manifest_key(model, version)
        try:
            self._put_small(key, path, sha256_file(path))
            return True
        except ClientError as error:
            if not _is_condition_failed(error):
                raise self._translate(error, "uploading", key) from error
        # Someone completed the version meanwhile: fine only if it is the same bundle (compared by digest,
        # so formatting differences of the JSON file do not matter).
        found = self._get_bytes(key, "comparing")
        if found is None:  # pragma: no cover - deleted between the 412 and this read
            raise ObjectStoreError(f"{self.uri(key)} vanished while publishing; retry the publish")
        self._check_same_bundle(model, version, found[0], digest)
        return False

    # ---- verification

    def verify_version(self, model: str, version: str, *, read_back: bool = False) -> Manifest:
        """Check a stored version is complete: its manifest exists and every listed file exists with the
        listed size and SHA-256 (the server's checksum; ``read_back`` also downloads objects that have
        none). Returns the stored manifest; raises ``VersionNotFoundError`` or ``CorruptObjectError``."""
        manifest, _body = self._read_stored_manifest(model, version, "verifying a version")
        self._verify_files(model, version, manifest, read_back=read_back)
        return manifest

    def _verify_files(self, model: str, version: str, manifest: Manifest, *, read_back: bool) -> None:
        problems = []
        for entry in manifest.files:
            key = self.version_prefix(model, version) + entry.path
            try:
                size, sha256, _how = self._stored_digest(key, "verifying a version", read_back=read_back)
            except ObjectNotFoundError:
                problems.append(f"{entry.path}: missing")
                continue
            if size != entry.size:
                problems.append(f"{entry.path}: size {size} != manifest {entry.size}")
            elif sha256 is not None and sha256 != entry.sha256:
                problems.append(f"{entry.path}: sha256 differs from manifest")
        if problems:
            raise CorruptObjectError(
                f"version {version!r} of model {model!r} at {self.uri(self.version_prefix(model, version))} "
                f"({self.settings.endpoint_label()}) is damaged: {'; '.join(problems)}. Publish the bundle "
                "again under a new version."
            )

    # ---- channels

    def read_channel(self, model: str, channel: str) -> ChannelPointer | None:
        """The channel's pointer with its ``etag``, or None if the channel was never set."""
        key = self.channel_key(model, channel)
        found = self._get_bytes(key, "reading a channel pointer")
        if found is None:
            return None
        body, etag = found
        try:
            pointer = ChannelPointer.model_validate_json(body)
        except ValidationError as error:
            raise CorruptObjectError(
                f"channel pointer {self.uri(key)} ({self.settings.endpoint_label()}) is not valid: "
                f"{error.errors()[0]['msg']}. Move the channel again with the pipeline's publish step."
            ) from None
        return pointer.model_copy(update={"etag": etag})

    def move_channel(
        self,
        model: str,
        channel: str,
        version: str,
        *,
        expected_etag: str,
        reason: str,
        actor: str | None = None,
        expected_bundle_digest: str | None = None,
        extra: Mapping[str, str] | None = None,
    ) -> ChannelPointer:
        """Point ``channel`` at ``version`` if nobody moved it since it was read.

        ``expected_etag`` is the ``etag`` of the pointer from ``read_channel``, or ``CHANNEL_ABSENT`` if
        it returned None. ``expected_bundle_digest`` (e.g. ``PublishedVersion.bundle_digest``) guards
        against pointing at a different bundle than the one that was validated. See the module docstring
        for the write order. Returns the new pointer with its ETag.
        """
        if not reason.strip():
            raise ValueError("move_channel needs a reason (it is kept in the channel's history)")
        manifest, manifest_body = self._read_stored_manifest(model, version, "checking the target version")
        digest = manifest.digest()
        if expected_bundle_digest is not None and digest != expected_bundle_digest:
            raise CorruptObjectError(
                f"version {version!r} of model {model!r} in the store has bundle digest {digest}, not the "
                f"expected {expected_bundle_digest}: the store holds a different bundle than the one you "
                "validated. Do not serve it; publish the validated bundle under a new version."
            )
        self._verify_files(model, version, manifest, read_back=False)
        key = self.channel_key(model, channel)
        current = self.read_channel(model, channel)
        if current is not None:
            self._write_history(current, late=True)

        moved_at = datetime.now(UTC)
        history_key = f"{self.history_prefix(model)}{_history_stamp(moved_at)}-{channel}-{version}.json"
        pointer = ChannelPointer(
            model=model,
            channel=channel,
            version=version,
            bundle_digest=digest,
            manifest_key=self.manifest_key(model, version),
            manifest_sha256=hashlib.sha256(manifest_body).hexdigest(),
            previous_version=current.version if current is not None else None,
            updated_at=moved_at.isoformat(timespec="microseconds"),
            reason=reason,
            actor=actor,
            history_key=history_key,
            extra=dict(extra or {}),
        )
        condition = {"IfNoneMatch": "*"} if expected_etag == CHANNEL_ABSENT else {"IfMatch": expected_etag}
        body = pointer.model_dump_json(indent=2).encode()
        from botocore.exceptions import ClientError

        try:
            response = self._call(
                "moving a channel",
                key,
                "put_object",
                Key=key,
                Body=body,
                ContentType="application/json",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"),
                **condition,
            )
            etag = response["ETag"]
        except (ClientError, ObjectNotFoundError) as error:
            # 412 (S3 and SeaweedFS), or 404 from AWS for If-Match on a pointer that was deleted.
            now = self.read_channel(model, channel)
            if now is not None and now.history_key == history_key:
                # Our own write landed and a retry of it got 412: the move succeeded.
                etag = now.etag or ""
            else:
                raise self._channel_conflict(model, channel, version, expected_etag, now) from error
        moved = pointer.model_copy(update={"etag": etag})
        self._write_history(moved, late=False)
        logger.info("channel %s/%s: %s -> %s (%s)", model, channel, pointer.previous_version, version, reason)
        return moved

    def _channel_conflict(
        self, model: str, channel: str, version: str, expected_etag: str, now: ChannelPointer | None
    ) -> ChannelConflictError:
        if now is None:
            state = "has no pointer now (it was removed)"
        else:
            state = f"now points to version {now.version!r} (moved at {now.updated_at} by {now.actor or '?'})"
        expected = "no pointer" if expected_etag == CHANNEL_ABSENT else f"ETag {expected_etag}"
        return ChannelConflictError(
            f"channel {channel!r} of model {model!r} ({self.uri(self.channel_key(model, channel))}, "
            f"{self.settings.endpoint_label()}) was moved by someone else: you expected {expected}, but it "
            f"{state}. It was NOT moved to {version!r}. Read the channel again and decide whether to "
            "move it.",
            channel=channel,
            current=now,
        )

    def _write_history(self, pointer: ChannelPointer, *, late: bool) -> None:
        """Write the history record of the move that produced ``pointer`` if it is not there yet.

        Never raises for store failures: the pointer already holds the record, and the next move of the
        channel writes a missing one (``late=True``).
        """
        from botocore.exceptions import ClientError

        key = pointer.history_key
        if key is None:
            return
        record = HistoryRecord.of_pointer(pointer)
        body = record.model_dump_json(indent=2).encode()
        try:
            if late and self._head(key, "checking history") is not None:
                return
            self._call(
                "appending history",
                key,
                "put_object",
                Key=key,
                Body=body,
                ContentType="application/json",
                ChecksumSHA256=base64.b64encode(hashlib.sha256(body).digest()).decode("ascii"),
                IfNoneMatch="*",
            )
            if late:
                logger.warning("wrote missing history record %s (a previous move was interrupted)", key)
        except ClientError as error:
            if _is_condition_failed(error):
                return  # Already written (records are derived from the pointer, so identical).
            logger.warning("could not write history record %s: %s", self.uri(key), error)
        except ObjectStoreError as error:
            logger.warning(
                "channel %s moved, but its history record %s could not be written (%s); the next move of "
                "this channel will write it",
                pointer.channel,
                self.uri(key),
                error,
            )

    # ---- listing

    def _list(self, prefix: str, action: str) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (BotoCoreError, ClientError) as error:
            raise self._translate(error, action, prefix) from error

    def list_versions(self, model: str) -> list[str]:
        """Complete versions of ``model`` (those with a manifest), oldest publish first."""
        prefix = f"{self.model_prefix(model)}/versions/"
        complete = [
            (item["LastModified"], item["Key"][len(prefix) : -len(MANIFEST_NAME) - 1])
            for item in self._list(prefix, "listing versions")
            if item["Key"].endswith("/" + MANIFEST_NAME) and item["Key"].count("/", len(prefix)) == 1
        ]
        return [version for _modified, version in sorted(complete)]

    def history(self, model: str, channel: str | None = None) -> list[HistoryRecord]:
        """Channel moves of ``model`` (optionally one channel), oldest first."""
        if channel is not None:
            _check_name("channel", channel)
        records = []
        for item in sorted(self._list(self.history_prefix(model), "listing history"), key=lambda i: i["Key"]):
            found = self._get_bytes(item["Key"], "reading history")
            if found is None:
                continue
            try:
                record = HistoryRecord.model_validate_json(found[0])
            except ValidationError:
                logger.warning("skipping unreadable history record %s", self.uri(item["Key"]))
                continue
            if channel is None or record.channel == channel:
                records.append(record)
        return records

    # ---- fetch

    def fetch_version(
        self, model: str, version: str, dest_dir: Path, *, expected_bundle_digest: str | None = None
    ) -> Manifest:
        """Download a version into ``dest_dir`` and return its verified manifest.

        Files land in a temporary directory next to ``dest_dir``, are checked against the manifest
        (``verify_bundle``), and the directory is renamed into place, so ``dest_dir`` is either absent or a
        complete, verified bundle. If ``dest_dir`` already holds this exact bundle it is reused.
        """
        dest_dir = Path(dest_dir)
        manifest, manifest_body = self._read_stored_manifest(model, version, "fetching a version")
        digest = manifest.digest()
        if expected_bundle_digest is not None and digest != expected_bundle_digest:
            raise CorruptObjectError(
                f"version {version!r} of model {model!r} has bundle digest {digest}, expected "
                f"{expected_bundle_digest} (e.g. from the channel pointer); refusing to fetch a different "
                "bundle than the one the channel names."
            )
        if dest_dir.exists():
            return self._reuse_destination(dest_dir, digest, model, version)
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.partial-", dir=dest_dir.parent))
        try:
            (staging / MANIFEST_NAME).write_bytes(manifest_body)
            transfer = self._transfer_config()
            for entry in manifest.files:
                key = self.version_prefix(model, version) + entry.path
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download(key, target, transfer)
                actual = sha256_file(target)
                if target.stat().st_size != entry.size or actual != entry.sha256:
                    raise CorruptObjectError(
                        f"object {self.uri(key)} ({self.settings.endpoint_label()}) does not match its "
                        f"manifest: size {target.stat().st_size} (expected {entry.size}), sha256 {actual} "
                        f"(expected {entry.sha256}). It was modified or damaged after publishing; nothing "
                        f"was written to {dest_dir}. Publish the bundle again under a new version."
                    )
            try:
                verify_bundle(staging)
            except BundleError as error:
                raise CorruptObjectError(f"fetched version {version!r} failed verification: {error}") from None
            try:
                staging.rename(dest_dir)
            except OSError:
                if dest_dir.exists():  # another fetcher finished first
                    return self._reuse_destination(dest_dir, digest, model, version)
                raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("fetched %s/%s into %s", model, version, dest_dir)
        return manifest

    def _reuse_destination(self, dest_dir: Path, digest: str, model: str, version: str) -> Manifest:
        try:
            local = verify_bundle(dest_dir)
        except BundleError as error:
            raise FetchDestinationError(
                f"{dest_dir} exists but is not a valid bundle ({error}); remove it or fetch elsewhere"
            ) from None
        if local.digest() != digest:
            raise FetchDestinationError(
                f"{dest_dir} holds another bundle (digest {local.digest()}) than version {version!r} of "
                f"{model!r} ({digest}); remove it or fetch into another directory"
            )
        return local

    def _transfer_config(self) -> Any:
        from boto3.s3.transfer import TransferConfig

        return TransferConfig(
            multipart_threshold=self.settings.multipart_threshold_mb * _MIB,
            multipart_chunksize=self.settings.multipart_chunksize_mb * _MIB,
            # Ranged GETs in parallel; a few threads saturate a link without starving a small host.
            max_concurrency=4,
        )

    def _download(self, key: str, target: Path, transfer: Any) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.client.download_file(self.settings.bucket, key, str(target), Config=transfer)
        except ClientError as error:
            if _is_not_found(error):
                raise ObjectNotFoundError(
                    f"object {self.uri(key)} listed in the manifest is missing at "
                    f"{self.settings.endpoint_label()}: the version is damaged. Publish it again under a "
                    "new version."
                ) from error
            raise self._translate(error, "downloading", key) from error
        except BotoCoreError as error:
            raise self._translate(error, "downloading", key) from error
