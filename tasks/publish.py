"""Publish stage: upload the gated bundle to S3-compatible storage as an immutable version, verify it,
then move the channel pointer (written last, conditionally) so servers pick it up.

Version ids are ``v<MLflow version>-<first 8 hex of the bundle digest>``: readable, tied to the
registry, and unique even if the MLflow store is ever recreated against the same bucket.

``ObjectStorePublisher`` is the store's write side (the read side, which the server uses, is
``enginekit.objectstore.ObjectStoreReader``). Ordering and failure semantics of a channel move
(``ObjectStorePublisher.move_channel``):

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
"""

from __future__ import annotations

import base64
import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from enginekit.bundle import MANIFEST_NAME, BundleError, Manifest, parse_manifest, sha256_file, verify_bundle
from enginekit.objectstore import (
    _MIB,
    BucketNotFoundError,
    ChannelPointer,
    CorruptObjectError,
    HistoryRecord,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreReader,
    ObjectStoreSettings,
    _check_name,
    _Document,
    _error_code,
    _is_condition_failed,
)
from tasks.config import PublishConfig

logger = logging.getLogger(__name__)

CHANNEL_ABSENT = "absent"
"""Pass as ``expected_etag`` to ``move_channel`` when ``read_channel`` found no pointer."""
_MAX_MULTIPART_PARTS = 10_000
"""S3 refuses a multipart upload with more parts than this."""


class VersionConflictError(ObjectStoreError):
    """The version already exists with different content; versions are immutable."""


class ChannelConflictError(ObjectStoreError):
    """Another writer moved the channel since it was read (conditional write failed)."""

    def __init__(self, message: str, *, channel: str, current: ChannelPointer | None) -> None:
        super().__init__(message)
        self.channel = channel
        self.current = current
        """The pointer as it is now (None if the channel has no pointer)."""


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


def _hex_to_base64(hex_digest: str) -> str:
    return base64.b64encode(bytes.fromhex(hex_digest)).decode("ascii")


def _content_type(key: str) -> str:
    return "application/json" if key.endswith(".json") else "application/octet-stream"


def _history_stamp(moment: datetime) -> str:
    """Sortable UTC stamp for history keys (lexicographic order == time order)."""
    return moment.strftime("%Y%m%dT%H%M%S.%fZ")


class ObjectStorePublisher(ObjectStoreReader):
    """The store's write side: create the bucket, publish immutable versions, move channels (with history)."""

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
        manifest, manifest_body = self._read_expected_manifest(
            model,
            version,
            "checking the target version",
            expected_bundle_digest,
            "the store holds a different bundle than the one you validated. Do not serve it; publish the "
            "validated bundle under a new version.",
        )
        digest = manifest.digest()
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

    def history_record_exists(self, pointer: ChannelPointer) -> bool:
        """Whether the history record of the move that produced ``pointer`` is stored."""
        return pointer.history_key is None or self._head(pointer.history_key, "checking history") is not None

    def write_missing_history(self, pointer: ChannelPointer) -> None:
        """Write the history record of ``pointer``'s move if it is missing (``reconcile``)."""
        self._write_history(pointer, late=True)

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


@dataclass(frozen=True)
class ChannelState:
    """A channel pointer as read at one moment: what a run's decision was made against."""

    model: str
    channel: str
    version: str | None
    """The version served (None: the channel has never been set)."""
    etag: str
    """The pointer's ETag, or ``CHANNEL_ABSENT``: the condition of the run's channel move."""
    bundle_digest: str | None = None
    mlflow_version: str | None = None
    """The registry version the pointer names (``extra.mlflow_version``), when it names one."""
    updated_at: str | None = None

    @classmethod
    def of(cls, model: str, channel: str, pointer: ChannelPointer | None) -> ChannelState:
        if pointer is None:
            return cls(model, channel, None, CHANNEL_ABSENT)
        return cls(
            model,
            channel,
            pointer.version,
            pointer.etag or CHANNEL_ABSENT,
            pointer.bundle_digest,
            pointer.extra.get("mlflow_version"),
            pointer.updated_at,
        )

    def describe(self) -> str:
        if self.version is None:
            return f"channel {self.channel!r} of {self.model!r} had no pointer"
        return f"channel {self.channel!r} of {self.model!r} served {self.version} (moved {self.updated_at})"


def read_channel_state(store: ObjectStoreSettings, model: str, channel: str) -> ChannelState:
    return ChannelState.of(model, channel, ObjectStoreReader(store).read_channel(model, channel))


@dataclass(frozen=True)
class PublishResult:
    version: str
    version_uri: str
    channel: str
    channel_uri: str
    previous_version: str | None


def version_id(mlflow_version: str, digest: str) -> str:
    return f"v{mlflow_version}-{digest[:8]}"


class StaleDecisionError(ChannelConflictError):
    """The channel moved after this run's gates were decided: the run must not move it (never retried)."""


def publish_bundle(
    config: PublishConfig,
    model_name: str,
    bundle_dir: Path,
    mlflow_version: str,
    mlflow_uri: str,
    actor: str | None = None,
    log=print,
    decided: ChannelState | None = None,
    reason: str | None = None,
) -> PublishResult:
    """Upload the bundle as an immutable version, then move the channel to it.

    ``decided``: the channel as it was when the gates were decided (``read_channel_state``). The move is a
    compare-and-set against exactly that pointer: if another writer moved the channel since, nothing is
    moved and ``StaleDecisionError`` names the winner. If the channel already points to this very bundle
    (a retried or resumed run whose move landed), nothing is moved again. Without ``decided`` (an operator
    command acting on what it reads now), the move is conditional on the pointer read here."""
    manifest = verify_bundle(Path(bundle_dir))
    store = ObjectStorePublisher(config.store)
    if config.store.create_bucket:
        store.ensure_bucket()
    version = version_id(mlflow_version, manifest.digest())
    published = store.publish_version(model_name, version, Path(bundle_dir), manifest)
    current = store.read_channel(model_name, config.channel)
    channel_uri = store.uri(store.channel_key(model_name, config.channel))
    if current is not None and current.version == version and current.bundle_digest == published.bundle_digest:
        log(f"published {published.uri}; channel {config.channel} already serves {version} (nothing moved again)")
        return PublishResult(version, published.uri, config.channel, channel_uri, current.previous_version)
    expected = decided.etag if decided is not None else (current.etag if current and current.etag else CHANNEL_ABSENT)
    try:
        store.move_channel(
            model_name,
            config.channel,
            version,
            expected_etag=expected,
            reason=reason or f"gates passed; MLflow {mlflow_uri}",
            actor=actor,
            expected_bundle_digest=published.bundle_digest,
            extra={"mlflow_model_uri": mlflow_uri, "mlflow_version": mlflow_version},
        )
    except ChannelConflictError as error:
        if decided is None:
            raise
        winner = error.current
        now = (
            f"now serves {winner.version} (moved at {winner.updated_at} by {winner.actor or '?'})"
            if winner
            else ("has no pointer now")
        )
        raise StaleDecisionError(
            f"channel {config.channel!r} of {model_name!r} moved after this run's gates were decided against "
            f"{decided.version or 'no champion'}: it {now}. Version {version} was uploaded ({published.uri}) "
            "but the channel was NOT moved and the champion alias is untouched; run again to compare with "
            "the new champion.",
            channel=config.channel,
            current=winner,
        ) from None
    previous = current.version if current is not None else None
    log(f"published {published.uri}; channel {config.channel}: {previous or '(none)'} → {version}")
    return PublishResult(version, published.uri, config.channel, channel_uri, previous)


def retry_unless(*never: type[BaseException]):
    """A Prefect ``retry_condition_fn``: retry a failed task run unless it failed with one of ``never``."""

    def should_retry(_task: Any, _task_run: Any, state: Any) -> bool:
        error = state.result(raise_on_failure=False) if hasattr(state, "result") else None
        return not isinstance(error, never)

    return should_retry


# A lost compare-and-set is never retried into a win; versions conflicting with what is stored neither.
@task(
    name="publish-s3",
    cache_policy=NO_CACHE,
    persist_result=False,
    retries=2,
    retry_delay_seconds=5,
    retry_condition_fn=retry_unless(ChannelConflictError, VersionConflictError, BundleError),
)
def publish_task(
    config: PublishConfig,
    model_name: str,
    bundle_dir: str,
    mlflow_version: str,
    mlflow_uri: str,
    decided: ChannelState | None = None,
) -> PublishResult:
    from prefect import runtime

    actor = f"prefect flow run {runtime.flow_run.id}" if runtime.flow_run.id else None
    return publish_bundle(
        config,
        model_name,
        Path(bundle_dir),
        mlflow_version,
        mlflow_uri,
        actor,
        log=get_run_logger().info,
        decided=decided,
    )
