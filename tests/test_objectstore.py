"""The object-store client against a real SeaweedFS server (one process for the session)."""

from __future__ import annotations

import os
import re
import shutil
import signal
from pathlib import Path

import pytest

from enginekit.bundle import MANIFEST_NAME, BundleError, runtime_files, verify_bundle
from enginekit.objectstore import (
    BucketNotFoundError,
    CorruptObjectError,
    CredentialsError,
    EndpointUnreachableError,
    FetchDestinationError,
    ObjectStoreSettings,
    VersionNotFoundError,
)
from infra.localstack import LOCAL_PROFILE
from tasks.publish import CHANNEL_ABSENT, ChannelConflictError, VersionConflictError
from tasks.publish import ObjectStorePublisher as ObjectStore
from tests.bundle_factory import make_bundle
from tests.s3_fixtures import LocalS3, free_port, seaweedfs_server  # noqa: F401 (the fixture)

MODEL = "tiny-intent"


@pytest.fixture
def store(seaweedfs: LocalS3, request: pytest.FixtureRequest) -> ObjectStore:
    """A store with a prefix of its own, so tests share the server but not their keys."""
    prefix = "t-" + re.sub(r"[^a-z0-9]+", "-", request.node.name.lower())[:60]
    return ObjectStore(seaweedfs.settings(prefix=prefix))


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    make_bundle(tmp_path / "bundle-a", model_name=MODEL, variant="a")
    return tmp_path / "bundle-a"


def _keys(seaweedfs: LocalS3, prefix: str) -> list[str]:
    response = seaweedfs.raw_client().list_objects_v2(Bucket=seaweedfs.bucket, Prefix=prefix)
    return sorted(item["Key"] for item in response.get("Contents", []))


def test_publish_uploads_and_verifies_every_file(store: ObjectStore, bundle: Path, seaweedfs: LocalS3) -> None:
    manifest = verify_bundle(bundle)

    published = store.publish_version(MODEL, "v1", bundle, manifest)

    prefix = store.version_prefix(MODEL, "v1")
    expected = sorted([prefix + entry.path for entry in manifest.files] + [prefix + MANIFEST_NAME])
    assert _keys(seaweedfs, prefix) == expected
    assert [obj.key for obj in published.objects][-1] == prefix + MANIFEST_NAME
    assert all(obj.uploaded for obj in published.objects)
    # Small files carry the SHA-256 we sent, so no read-back was needed.
    assert {obj.verified_by for obj in published.objects[:-1]} == {"checksum"}
    assert published.bundle_digest == manifest.digest()
    assert published.uri == f"s3://{seaweedfs.bucket}/{prefix}"
    assert store.list_versions(MODEL) == ["v1"]


def test_republishing_the_same_bundle_is_a_no_op(store: ObjectStore, bundle: Path) -> None:
    first = store.publish_version(MODEL, "v1", bundle)

    again = store.publish_version(MODEL, "v1", bundle)

    assert again.bundle_digest == first.bundle_digest
    assert not any(obj.uploaded for obj in again.objects)


def test_retry_after_a_crash_before_the_manifest_completes_the_version(
    store: ObjectStore, bundle: Path, seaweedfs: LocalS3
) -> None:
    store.publish_version(MODEL, "v1", bundle)
    # As if the publisher died after the files but before manifest.json.
    seaweedfs.raw_client().delete_object(Bucket=seaweedfs.bucket, Key=store.manifest_key(MODEL, "v1"))
    assert store.list_versions(MODEL) == []

    retried = store.publish_version(MODEL, "v1", bundle)

    assert [obj.uploaded for obj in retried.objects] == [False] * (len(retried.objects) - 1) + [True]
    assert store.list_versions(MODEL) == ["v1"]


def test_different_content_under_an_existing_version_is_refused(
    store: ObjectStore, bundle: Path, tmp_path: Path
) -> None:
    original = store.publish_version(MODEL, "v1", bundle)
    other = tmp_path / "bundle-b"
    make_bundle(other, model_name=MODEL, variant="b")

    with pytest.raises(VersionConflictError, match="versions are immutable"):
        store.publish_version(MODEL, "v1", other)

    assert store.verify_version(MODEL, "v1", read_back=True).digest() == original.bundle_digest


def test_interrupted_publish_leaves_the_version_invisible(store: ObjectStore, bundle: Path, seaweedfs: LocalS3) -> None:
    # Another writer's object already sits at one of the keys: the upload stops midway.
    seaweedfs.raw_client().put_object(
        Bucket=seaweedfs.bucket, Key=store.version_prefix(MODEL, "v2") + "golden.json", Body=b"{}"
    )

    with pytest.raises(VersionConflictError, match=r"golden\.json.*versions are immutable"):
        store.publish_version(MODEL, "v2", bundle)

    assert store.manifest_key(MODEL, "v2") not in _keys(seaweedfs, store.version_prefix(MODEL, "v2"))
    assert store.list_versions(MODEL) == []
    with pytest.raises(VersionNotFoundError, match="upload did not finish"):
        store.move_channel(MODEL, "production", "v2", expected_etag=CHANNEL_ABSENT, reason="test")
    assert store.read_channel(MODEL, "production") is None


def test_a_bundle_that_fails_verification_is_not_uploaded(store: ObjectStore, bundle: Path, seaweedfs: LocalS3) -> None:
    (bundle / "golden.json").write_text('{"tampered": true}')

    with pytest.raises(BundleError, match=r"golden\.json"):
        store.publish_version(MODEL, "v1", bundle)

    assert _keys(seaweedfs, store.model_prefix(MODEL)) == []


def test_large_files_go_in_parts_and_are_verified_by_reading_back(store: ObjectStore, tmp_path: Path) -> None:
    bundle = tmp_path / "big"
    make_bundle(bundle, model_name=MODEL, engine_bytes=6 * 1024 * 1024 + 123)  # 2 parts of 5 MiB

    published = store.publish_version(MODEL, "v1", bundle)
    again = store.publish_version(MODEL, "v1", bundle)
    fetched = store.fetch_version(MODEL, "v1", tmp_path / "fetched")

    engine = next(obj for obj in published.objects if obj.key.endswith("engine/model.int8.onnx"))
    assert engine.verified_by == "read_back"  # the server keeps only a composite (per-part) checksum
    assert not any(obj.uploaded for obj in again.objects)
    assert fetched.digest() == published.bundle_digest


def test_fetch_round_trip(store: ObjectStore, bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    published = store.publish_version(MODEL, "v1", bundle)
    destination = tmp_path / "cache" / MODEL / "v1"
    import enginekit.bundle
    import enginekit.objectstore

    hashed: list[str] = []
    real_sha256 = enginekit.bundle.sha256_file

    def counting_sha256(path: Path) -> str:
        hashed.append(Path(path).name)
        return real_sha256(path)

    for module in (enginekit.bundle, enginekit.objectstore):
        monkeypatch.setattr(module, "sha256_file", counting_sha256)

    manifest = store.fetch_version(MODEL, "v1", destination, expected_bundle_digest=published.bundle_digest)

    # Each file is read once to check it (100 MB of engine is ~0.1 s of a core the server needs).
    assert sorted(hashed) == sorted(Path(entry.path).name for entry in manifest.files)

    assert verify_bundle(destination).digest() == manifest.digest() == published.bundle_digest
    for entry in manifest.files:
        assert (destination / entry.path).read_bytes() == (bundle / entry.path).read_bytes()
    assert sorted(p.name for p in destination.parent.iterdir()) == ["v1"]  # no staging dir left
    # A second fetch into the same place reuses the verified bundle.
    assert store.fetch_version(MODEL, "v1", destination).digest() == manifest.digest()


def test_a_serving_copy_holds_only_what_a_runtime_reads_and_is_still_checked(
    store: ObjectStore, bundle: Path, tmp_path: Path
) -> None:
    """A server fetches the engine, tokenizer and golden set, never the portable graph (half a CPU bundle)."""
    published = store.publish_version(MODEL, "v1", bundle)
    destination = tmp_path / "serving" / "v1"
    manifest = store.fetch_version(
        MODEL, "v1", destination, expected_bundle_digest=published.bundle_digest, runtime_only=True
    )
    assert not (destination / manifest.portable_onnx).exists()
    present = sorted(p.relative_to(destination).as_posix() for p in destination.rglob("*") if p.is_file())
    assert present == sorted({*runtime_files(manifest), MANIFEST_NAME})
    assert manifest.engine_file in present and manifest.golden.file in present
    assert verify_bundle(destination, runtime_only=True).digest() == published.bundle_digest
    with pytest.raises(BundleError, match=f"missing file {re.escape(manifest.portable_onnx)}"):
        verify_bundle(destination)  # a full check still wants every file
    # Reused as it is by the next fetch; a damaged runtime file is found there.
    assert store.fetch_version(MODEL, "v1", destination, runtime_only=True).digest() == published.bundle_digest
    (destination / manifest.golden.file).write_text("{}")
    with pytest.raises(FetchDestinationError, match=r"golden\.json"):
        store.fetch_version(MODEL, "v1", destination, runtime_only=True)
    # A file the manifest does not list is refused in a serving copy too.
    shutil.rmtree(destination)
    store.fetch_version(MODEL, "v1", destination, runtime_only=True)
    (destination / "extra.bin").write_bytes(b"x")
    with pytest.raises(BundleError, match=r"unexpected file extra\.bin"):
        verify_bundle(destination, runtime_only=True)


def test_fetch_refuses_a_corrupted_object_and_leaves_no_destination(
    store: ObjectStore, bundle: Path, seaweedfs: LocalS3, tmp_path: Path
) -> None:
    store.publish_version(MODEL, "v1", bundle)
    key = store.version_prefix(MODEL, "v1") + "tokenizer/tokenizer.json"
    original = (bundle / "tokenizer" / "tokenizer.json").read_bytes()
    # Same size, different bytes, written without any condition behind the store's back.
    seaweedfs.raw_client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=original.replace(b"buy", b"bUy"))
    destination = tmp_path / "cache" / "v1"

    with pytest.raises(CorruptObjectError, match=re.escape(key)):
        store.fetch_version(MODEL, "v1", destination)

    assert not destination.exists()
    assert list(destination.parent.iterdir()) == []  # the staging directory is gone too
    with pytest.raises(CorruptObjectError, match=r"tokenizer\.json: sha256 differs"):
        store.verify_version(MODEL, "v1", read_back=True)


def test_channel_refuses_a_damaged_version(store: ObjectStore, bundle: Path, seaweedfs: LocalS3) -> None:
    store.publish_version(MODEL, "v1", bundle)
    key = store.version_prefix(MODEL, "v1") + "engine/model.int8.onnx"
    seaweedfs.raw_client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=b"truncated")

    with pytest.raises(CorruptObjectError, match=r"engine/model\.int8\.onnx: size 9"):
        store.move_channel(MODEL, "production", "v1", expected_etag=CHANNEL_ABSENT, reason="release")

    assert store.read_channel(MODEL, "production") is None


def test_channel_moves_are_recorded_in_history(store: ObjectStore, bundle: Path, tmp_path: Path) -> None:
    first = store.publish_version(MODEL, "v1", bundle)
    make_bundle(tmp_path / "bundle-b", model_name=MODEL, variant="b")
    second = store.publish_version(MODEL, "v2", tmp_path / "bundle-b")
    assert store.read_channel(MODEL, "production") is None

    initial = store.move_channel(
        MODEL,
        "production",
        "v1",
        expected_etag=CHANNEL_ABSENT,
        reason="first release",
        actor="test",
        expected_bundle_digest=first.bundle_digest,
        extra={"mlflow_model_version": "1"},
    )
    read = store.read_channel(MODEL, "production")
    assert read is not None and read.etag == initial.etag and read.version == "v1"
    assert read.bundle_digest == first.bundle_digest and read.extra == {"mlflow_model_version": "1"}

    store.move_channel(MODEL, "production", "v2", expected_etag=read.etag, reason="retrained")
    store.move_channel(MODEL, "staging", "v2", expected_etag=CHANNEL_ABSENT, reason="canary")

    production = store.history(MODEL, "production")
    assert [(r.from_version, r.to_version, r.reason) for r in production] == [
        (None, "v1", "first release"),
        ("v1", "v2", "retrained"),
    ]
    assert production[1].bundle_digest == second.bundle_digest
    assert len(store.history(MODEL)) == 3
    pointer = store.read_channel(MODEL, "production")
    assert pointer is not None and pointer.previous_version == "v1" and pointer.version == "v2"


def test_two_writers_with_the_same_stale_etag_cannot_both_move_a_channel(
    store: ObjectStore, bundle: Path, tmp_path: Path
) -> None:
    store.publish_version(MODEL, "v1", bundle)
    make_bundle(tmp_path / "bundle-b", model_name=MODEL, variant="b")
    store.publish_version(MODEL, "v2", tmp_path / "bundle-b")
    store.move_channel(MODEL, "production", "v1", expected_etag=CHANNEL_ABSENT, reason="first")
    seen = store.read_channel(MODEL, "production")
    assert seen is not None and seen.etag

    store.move_channel(MODEL, "production", "v2", expected_etag=seen.etag, reason="writer A")
    with pytest.raises(ChannelConflictError, match=r"'production'.*now points to version 'v2'") as caught:
        store.move_channel(MODEL, "production", "v1", expected_etag=seen.etag, reason="writer B")

    assert caught.value.channel == "production"
    assert caught.value.current is not None and caught.value.current.version == "v2"
    # Both believed the channel was new: only the first wins.
    store.move_channel(MODEL, "canary", "v1", expected_etag=CHANNEL_ABSENT, reason="writer A")
    with pytest.raises(ChannelConflictError, match="canary"):
        store.move_channel(MODEL, "canary", "v2", expected_etag=CHANNEL_ABSENT, reason="writer B")
    assert [r.reason for r in store.history(MODEL, "production")] == ["first", "writer A"]
    assert [r.reason for r in store.history(MODEL, "canary")] == ["writer A"]


def test_a_history_record_lost_to_a_crash_is_written_by_the_next_move(
    store: ObjectStore, bundle: Path, seaweedfs: LocalS3
) -> None:
    store.publish_version(MODEL, "v1", bundle)
    first = store.move_channel(MODEL, "production", "v1", expected_etag=CHANNEL_ABSENT, reason="first")
    assert first.history_key is not None
    seaweedfs.raw_client().delete_object(Bucket=seaweedfs.bucket, Key=first.history_key)
    assert store.history(MODEL) == []

    store.move_channel(MODEL, "production", "v1", expected_etag=first.etag or "", reason="re-pin")

    assert [(r.from_version, r.reason) for r in store.history(MODEL)] == [(None, "first"), ("v1", "re-pin")]


def test_channel_refuses_a_version_with_another_digest(store: ObjectStore, bundle: Path) -> None:
    store.publish_version(MODEL, "v1", bundle)

    with pytest.raises(CorruptObjectError, match="different bundle"):
        store.move_channel(
            MODEL,
            "production",
            "v1",
            expected_etag=CHANNEL_ABSENT,
            reason="x",
            expected_bundle_digest="0" * 64,
        )


def test_unreachable_endpoint_names_the_endpoint_and_what_to_do(seaweedfs: LocalS3, bundle: Path) -> None:
    endpoint = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    store = ObjectStore(seaweedfs.settings(endpoint_url=endpoint, max_attempts=1, connect_timeout_s=1))

    with pytest.raises(EndpointUnreachableError) as caught:
        store.publish_version(MODEL, "v1", bundle)

    message = str(caught.value)
    assert endpoint in message and f"'{seaweedfs.bucket}'" in message and "infra.localstack up" in message


def test_wrong_credentials_are_reported_without_the_secret(seaweedfs: LocalS3, bundle: Path, tmp_path: Path) -> None:
    real = seaweedfs.credentials_file.read_text()
    access_key = re.search(r"aws_access_key_id = (\S+)", real).group(1)  # type: ignore[union-attr]
    wrong_secret = "not-the-secret-" + "x" * 20
    wrong = tmp_path / "wrong-credentials"
    wrong.write_text(f"[{LOCAL_PROFILE}]\naws_access_key_id = {access_key}\naws_secret_access_key = {wrong_secret}\n")
    store = ObjectStore(seaweedfs.settings(credentials_file=wrong))

    with pytest.raises(CredentialsError) as on_read:
        store.read_channel(MODEL, "production")
    with pytest.raises(CredentialsError) as on_publish:
        store.publish_version(MODEL, "v1", bundle)

    assert "SignatureDoesNotMatch" in str(on_read.value)
    for error in (on_read.value, on_publish.value):
        message = str(error)
        assert seaweedfs.endpoint_url in message and seaweedfs.bucket in message
        assert "credentials" in message and wrong_secret not in message


def test_unknown_access_key_and_missing_profile_are_credential_errors(seaweedfs: LocalS3, tmp_path: Path) -> None:
    unknown = tmp_path / "unknown-key"
    unknown.write_text(f"[{LOCAL_PROFILE}]\naws_access_key_id = NOSUCHKEY\naws_secret_access_key = x\n")

    with pytest.raises(CredentialsError, match="InvalidAccessKeyId"):
        ObjectStore(seaweedfs.settings(credentials_file=unknown)).read_channel(MODEL, "production")
    with pytest.raises(CredentialsError, match=r"profile \(nobody\) could not be found"):
        ObjectStore(seaweedfs.settings(aws_profile="nobody")).read_channel(MODEL, "production")
    with pytest.raises(CredentialsError, match="does not exist"):
        ObjectStore(seaweedfs.settings(credentials_file=tmp_path / "absent")).list_versions(MODEL)


def test_missing_bucket_is_reported_or_created_when_allowed(seaweedfs: LocalS3, bundle: Path) -> None:
    missing = ObjectStore(seaweedfs.settings(bucket="int8-not-created"))
    with pytest.raises(BucketNotFoundError, match=r"'int8-not-created' does not exist.*create_bucket"):
        missing.publish_version(MODEL, "v1", bundle)

    creating = ObjectStore(seaweedfs.settings(bucket="int8-created-on-demand", create_bucket=True))
    creating.publish_version(MODEL, "v1", bundle)

    assert creating.list_versions(MODEL) == ["v1"]


def test_settings_reject_bad_names_and_endpoints(store: ObjectStore) -> None:
    with pytest.raises(ValueError, match="endpoint_url"):
        ObjectStoreSettings(endpoint_url="127.0.0.1:8333", bucket="int8-engines")
    with pytest.raises(ValueError, match="bucket"):
        ObjectStoreSettings(bucket="ab")
    with pytest.raises(ValueError, match="not a valid name"):
        store.version_prefix(MODEL, "../escape")


def test_pointer_records_the_published_digest_without_the_local_bundle(store: ObjectStore, bundle: Path) -> None:
    # The store never reads the local bundle again after publishing: deleting it changes nothing.
    published = store.publish_version(MODEL, "v1", bundle)
    shutil.rmtree(bundle)

    pointer = store.move_channel(MODEL, "production", "v1", expected_etag=CHANNEL_ABSENT, reason="release")

    assert pointer.bundle_digest == published.bundle_digest
    assert pointer.manifest_sha256 == published.manifest_sha256


def test_polling_a_channel_is_a_conditional_get(store: ObjectStore, bundle: Path, tmp_path: Path) -> None:
    from enginekit.objectstore import ObjectStoreReader

    reader = ObjectStoreReader(store.settings)  # the server's read-only client
    assert reader.poll_channel(MODEL, "production", None) == reader.poll_channel(MODEL, "production", None)
    nothing = reader.poll_channel(MODEL, "production", None)
    assert not nothing.changed and nothing.pointer is None and nothing.etag is None

    store.publish_version(MODEL, "v1", bundle)
    make_bundle(tmp_path / "bundle-b", model_name=MODEL, variant="b")
    store.publish_version(MODEL, "v2", tmp_path / "bundle-b")
    moved = store.move_channel(MODEL, "production", "v1", expected_etag=CHANNEL_ABSENT, reason="first")
    first = reader.poll_channel(MODEL, "production", None)
    assert first.changed and first.pointer is not None and first.pointer.version == "v1"
    assert first.etag == moved.etag == first.pointer.etag
    unchanged = reader.poll_channel(MODEL, "production", first.etag)  # 304 from the server: no body
    assert not unchanged.changed and unchanged.pointer is None and unchanged.etag == first.etag
    store.move_channel(MODEL, "production", "v2", expected_etag=first.etag or "", reason="second")
    second = reader.poll_channel(MODEL, "production", first.etag)
    assert second.changed and second.pointer is not None and second.pointer.version == "v2"
    assert second.etag != first.etag
    assert not hasattr(reader, "move_channel") and not hasattr(reader, "publish_version")


def test_a_child_process_fetches_verifies_and_reports_failures_as_the_parent_would(
    store: ObjectStore, bundle: Path, seaweedfs: LocalS3, tmp_path: Path
) -> None:
    """The server downloads in ``serving.fetcher`` (no GIL shared with requests): same result, same errors,
    one long-lived child for many fetches, and a new child when one dies."""
    from serving.fetcher import FetchProcessError, FetchWorker

    published = store.publish_version(MODEL, "v1", bundle)
    worker = FetchWorker(store.settings, nice=1, timeout_s=60).start()
    try:
        first_child = worker.pid
        destination = tmp_path / "cache" / "v1"
        manifest = worker.fetch(MODEL, "v1", destination, published.bundle_digest)
        assert manifest.digest() == verify_bundle(destination).digest() == published.bundle_digest

        with pytest.raises(FetchProcessError, match="refusing to fetch a different bundle"):
            worker.fetch(MODEL, "v1", tmp_path / "other", "0" * 64)
        assert not (tmp_path / "other").exists()

        (destination / "golden.json").write_text("{}")  # a local copy touched behind the server's back
        with pytest.raises(FetchDestinationError, match="not a valid bundle"):
            worker.fetch(MODEL, "v1", destination, published.bundle_digest)

        serving_copy = worker.fetch(MODEL, "v1", tmp_path / "serving", published.bundle_digest, runtime_only=True)
        assert serving_copy.digest() == published.bundle_digest
        assert not (tmp_path / "serving" / serving_copy.portable_onnx).exists()
        assert worker.pid == first_child  # one process answered all of these

        key = store.version_prefix(MODEL, "v1") + "tokenizer/tokenizer.json"
        original = (bundle / "tokenizer" / "tokenizer.json").read_bytes()
        seaweedfs.raw_client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=original.replace(b"buy", b"bUy"))
        with pytest.raises(FetchProcessError, match=r"CorruptObjectError: object .*tokenizer\.json"):
            worker.fetch(MODEL, "v1", tmp_path / "fresh", published.bundle_digest)
        assert not (tmp_path / "fresh").exists()

        os.kill(first_child, signal.SIGKILL)  # a child that died is reported, then replaced
        with pytest.raises(FetchProcessError, match="fetch process exited"):
            worker.fetch(MODEL, "v1", tmp_path / "after", published.bundle_digest)
        seaweedfs.raw_client().put_object(Bucket=seaweedfs.bucket, Key=key, Body=original)
        assert worker.fetch(MODEL, "v1", tmp_path / "after", published.bundle_digest).digest() == manifest.digest()
        assert worker.pid not in (None, first_child)
    finally:
        worker.close()
    assert worker.pid is None
    with pytest.raises(FetchProcessError, match="stopped with the server"):  # no orphan child after a stop
        worker.fetch(MODEL, "v1", tmp_path / "late", published.bundle_digest)


def test_a_fetch_given_up_leaves_nothing_behind_and_the_next_child_is_ready(
    store: ObjectStore, bundle: Path, tmp_path: Path
) -> None:
    """A late swap gives up the niced child's download (``give_up_after_s``): the child is stopped, its
    partial copy removed, a new child started for the next fetch, and the destination stays absent."""
    from serving.fetcher import FetchAbandonedError, FetchWorker

    published = store.publish_version(MODEL, "v1", bundle)
    worker = FetchWorker(store.settings, nice=1, timeout_s=60).start()
    try:
        first_child = worker.pid
        destination = tmp_path / "cache" / "v1"
        with pytest.raises(FetchAbandonedError, match=r"not done after 0\.00 s"):
            worker.fetch(MODEL, "v1", destination, published.bundle_digest, give_up_after_s=0.0)
        assert worker.pid not in (None, first_child)
        assert not destination.exists() and not list(destination.parent.glob(".v1.partial-*"))
        manifest = worker.fetch(MODEL, "v1", destination, published.bundle_digest, give_up_after_s=60)
        assert manifest.digest() == verify_bundle(destination).digest() == published.bundle_digest
    finally:
        worker.close()
