"""The object store, read side: what a serving process (and every pipeline stage) needs to follow a channel.

Settings, errors, the documents (channel pointer, history record), and ``ObjectStoreReader``: read and
poll a channel pointer (conditional GET on its ETag), list versions and history, verify a stored version,
and fetch one into a local folder that is either absent or complete and verified. It never writes to the
store; publishing and channel moves are the pipeline's (``tasks/publish.py``, ``ObjectStorePublisher``).
It imports neither Prefect nor MLflow, and does nothing at import time (boto3 is imported when the first
client is built).

Layout under ``s3://BUCKET/PREFIX/MODEL/`` (the contract in the project's design notes)::

    versions/VERSION/<every file of the manifest>   immutable; each object written with If-None-Match: *
    versions/VERSION/manifest.json                  written LAST: its presence marks the version complete
    channels/CHANNEL.json                           which version a channel serves; compare-and-swap writes
    history/<UTC stamp>-CHANNEL-VERSION.json        append-only record of every channel move

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
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from enginekit.bundle import (
    MANIFEST_NAME,
    BundleError,
    Manifest,
    parse_manifest,
    runtime_files,
    sha256_file,
    verify_bundle,
)

if TYPE_CHECKING:
    from botocore.client import BaseClient

logger = logging.getLogger(__name__)

POINTER_SCHEMA_VERSION = 1

_MIB = 1024 * 1024
_READ_CHUNK_BYTES = _MIB
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
        if "@" in value.split("//", 1)[1].split("/", 1)[0]:
            raise ValueError(
                "endpoint_url must not carry credentials (user:password@): S3 credentials come from the AWS "
                "chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, credentials_file)"
            )
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


class FetchDestinationError(ObjectStoreError):
    """The fetch destination exists and is not the requested version."""


# ------------------------------------------------------------------------------------------------ models


class _Document(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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


def _base64_to_hex(checksum: str) -> str | None:
    """Full-object SHA-256 from an S3 checksum header; None for a composite (multipart) checksum."""
    if "-" in checksum:
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw.hex() if len(raw) == hashlib.sha256().digest_size else None


def _error_code(error: Exception) -> tuple[str, int | None]:
    response = getattr(error, "response", None) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    return code, status


def _is_condition_failed(error: Exception) -> bool:
    code, status = _error_code(error)
    return code in _CONDITION_FAILED_CODES or status == 412


def _is_not_modified(error: Exception) -> bool:
    """A conditional GET (If-None-Match) found the object unchanged: 304."""
    code, status = _error_code(error)
    return status == 304 or code in ("304", "NotModified")


def _is_not_found(error: Exception) -> bool:
    code, status = _error_code(error)
    return code in _NOT_FOUND_CODES or (status == 404 and code != "NoSuchBucket")


# ----------------------------------------------------------------------------------------------- client


@dataclass(frozen=True)
class ChannelRead:
    """One poll of a channel pointer (``ObjectStoreReader.poll_channel``)."""

    changed: bool
    """False when the pointer still has the ETag the caller passed (the server answered 304)."""
    pointer: ChannelPointer | None
    """The pointer (None if the channel has none); None as well when ``changed`` is False."""
    etag: str | None
    """ETag to pass on the next poll."""


class ObjectStoreReader:
    """Reads, verifies and fetches bundles and reads channel pointers in one bucket; never writes.

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
            if _is_condition_failed(error) or _is_not_modified(error):
                raise
            raise self._translate(error, action, key) from error
        except BotoCoreError as error:
            raise self._translate(error, action, key) from error

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

    def _read_expected_manifest(
        self, model: str, version: str, action: str, expected_digest: str | None, consequence: str
    ) -> tuple[Manifest, bytes]:
        """The stored manifest, refused (``CorruptObjectError``, ending with ``consequence``) when its
        bundle digest is not ``expected_digest``."""
        manifest, body = self._read_stored_manifest(model, version, action)
        digest = manifest.digest()
        if expected_digest is not None and digest != expected_digest:
            raise CorruptObjectError(
                f"version {version!r} of model {model!r} in the store has bundle digest {digest}, not the "
                f"expected {expected_digest}: {consequence}"
            )
        return manifest, body

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
        return self._parse_pointer(body, key, etag)

    def poll_channel(self, model: str, channel: str, etag: str | None) -> ChannelRead:
        """A conditional GET of the channel pointer: ``If-None-Match: etag`` (when given), so an unchanged
        pointer costs one 304 and no body. Raises ``ObjectStoreError`` subclasses like any read."""
        from botocore.exceptions import ClientError

        key = self.channel_key(model, channel)
        conditions = {"IfNoneMatch": etag} if etag else {}
        try:
            response = self._call("polling a channel pointer", key, "get_object", Key=key, **conditions)
        except ClientError as error:
            if _is_not_modified(error):
                return ChannelRead(changed=False, pointer=None, etag=etag)
            raise self._translate(error, "polling a channel pointer", key) from error
        except ObjectNotFoundError:
            return ChannelRead(changed=etag is not None, pointer=None, etag=None)
        body, new_etag = response["Body"].read(), response["ETag"]
        return ChannelRead(changed=True, pointer=self._parse_pointer(body, key, new_etag), etag=new_etag)

    def _parse_pointer(self, body: bytes, key: str, etag: str) -> ChannelPointer:
        try:
            pointer = ChannelPointer.model_validate_json(body)
        except ValidationError as error:
            raise CorruptObjectError(
                f"channel pointer {self.uri(key)} ({self.settings.endpoint_label()}) is not valid: "
                f"{error.errors()[0]['msg']}. Move the channel again with the pipeline's publish step."
            ) from None
        return pointer.model_copy(update={"etag": etag})

    # ---- listing

    def _list(self, prefix: str, action: str) -> Iterator[dict[str, Any]]:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            paginator = self.client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=self.settings.bucket, Prefix=prefix):
                yield from page.get("Contents", [])
        except (BotoCoreError, ClientError) as error:
            raise self._translate(error, action, prefix) from error

    def version_manifest(self, model: str, version: str) -> Manifest:
        """The stored manifest of a published version (parsed and checked, not the files behind it)."""
        return self._read_stored_manifest(model, version, "reading a version's manifest")[0]

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
        self,
        model: str,
        version: str,
        dest_dir: Path,
        *,
        expected_bundle_digest: str | None = None,
        runtime_only: bool = False,
    ) -> Manifest:
        """Download a version into ``dest_dir`` and return its verified manifest.

        Files land in a temporary directory next to ``dest_dir``, are checked against the manifest
        (``verify_bundle``), and the directory is renamed into place, so ``dest_dir`` is either absent or a
        complete, verified bundle. If ``dest_dir`` already holds this exact bundle it is reused.
        ``runtime_only``: a serving copy, only ``runtime_files`` (a server never reads the portable graph).
        """
        dest_dir = Path(dest_dir)
        manifest, manifest_body = self._read_expected_manifest(
            model,
            version,
            "fetching a version",
            expected_bundle_digest,
            "refusing to fetch a different bundle than the one the channel pointer names.",
        )
        digest = manifest.digest()
        if dest_dir.exists():
            return self._reuse_destination(dest_dir, digest, model, version, runtime_only)
        wanted = runtime_files(manifest) if runtime_only else {entry.path for entry in manifest.files}
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{dest_dir.name}.partial-", dir=dest_dir.parent))
        try:
            (staging / MANIFEST_NAME).write_bytes(manifest_body)
            transfer = self._transfer_config()
            hashed: dict[str, str] = {}
            for entry in manifest.files:
                if entry.path not in wanted:
                    continue
                key = self.version_prefix(model, version) + entry.path
                target = staging / entry.path
                target.parent.mkdir(parents=True, exist_ok=True)
                self._download(key, target, transfer)
                actual = hashed[entry.path] = sha256_file(target)
                if target.stat().st_size != entry.size or actual != entry.sha256:
                    raise CorruptObjectError(
                        f"object {self.uri(key)} ({self.settings.endpoint_label()}) does not match its "
                        f"manifest: size {target.stat().st_size} (expected {entry.size}), sha256 {actual} "
                        f"(expected {entry.sha256}). It was modified or damaged after publishing; nothing "
                        f"was written to {dest_dir}. Publish the bundle again under a new version."
                    )
            try:
                # one sha256 pass per file: each was hashed as it landed
                verify_bundle(staging, hashed=hashed, runtime_only=runtime_only)
            except BundleError as error:
                raise CorruptObjectError(f"fetched version {version!r} failed verification: {error}") from None
            try:
                staging.rename(dest_dir)
            except OSError:
                if dest_dir.exists():  # another fetcher finished first
                    return self._reuse_destination(dest_dir, digest, model, version, runtime_only)
                raise
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
        logger.info("fetched %s/%s into %s", model, version, dest_dir)
        return manifest

    def _reuse_destination(self, dest_dir: Path, digest: str, model: str, version: str, runtime_only: bool) -> Manifest:
        try:
            local = verify_bundle(dest_dir, runtime_only=runtime_only)
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
